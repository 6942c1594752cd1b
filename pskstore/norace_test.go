//go:build !race

package pskstore

const raceEnabled = false
