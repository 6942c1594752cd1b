// Package deploy holds no Go code. It owns how the gateway is shipped and
// run: the container image (Dockerfile, build-static.sh), the Kubernetes
// base (kubernetes/) and its variant for replicas that share sessions
// (kubernetes/replicas/), the systemd unit (systemd/) and the example
// configuration (examples/).
//
// Its tests keep these files honest: every Kubernetes manifest parses and
// agrees with the others (selectors, ports, probes, mounted files), with the
// Dockerfile (user, ports, entrypoint) and with package config; and the
// static binary the image ships is built with the image's exact command,
// checked to be a static ELF executable, and run with an empty environment
// and, as root, chrooted into a directory holding nothing but itself, its
// configuration and its keys; the replicas' rolling update runs with that
// binary and the replicas' configuration.
package deploy
