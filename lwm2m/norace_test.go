//go:build !race

package lwm2m

const raceEnabled = false
