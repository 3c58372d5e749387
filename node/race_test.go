//go:build race

package node

// raceEnabled: the race detector multiplies the memory of every allocation.
const raceEnabled = true
