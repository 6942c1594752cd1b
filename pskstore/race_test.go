//go:build race

package pskstore

// raceEnabled shrinks the sampling tests: the race detector slows
// compress/flate down some fifty times.
const raceEnabled = true
