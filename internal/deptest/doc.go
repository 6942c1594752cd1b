// Package deptest holds the test that guards the import arrows of
// DESIGN.md §2 (tailscale's deptest): config, lwm2m and pskstore import
// nothing of this module outside themselves, gateway imports only those
// and internal helpers, internal/cli nothing and internal/pskcli (the psk
// tool) only config, pskstore and internal/cli, and no library package
// imports a command, a tool or the integration tests. It has no code of
// its own.
package deptest
