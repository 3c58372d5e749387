//go:build race

package h3

// raceEnabled: the test binary runs under the race detector.
const raceEnabled = true
