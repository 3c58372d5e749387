//go:build race

package main

// raceEnabled: the race detector multiplies the memory of every allocation.
const raceEnabled = true
