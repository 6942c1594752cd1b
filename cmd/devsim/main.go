// Command devsim is the load tool: a fleet of simulated LwM2M devices
// (internal/devsim) that connect to a DTLS PSK gateway at a given rate, with
// a mix of DTLS versions and key-exchange modes, send a message pattern at a
// given rate, churn, and report handshake and request rates, latencies and
// errors. With --server-pid it also reports the server process's CPU time
// per handshake and per request and its memory per session, read from
// /proc: on a shared machine wall-clock rates are noise, CPU time is not.
//
//	devsim --gen-keys 1000 --mix 1.3-dhe=60,1.3-ke=20,1.2-ccm8=20 --out keys.yaml
//	gateway serve --config gw.yaml            # store.path: keys.yaml, backend 127.0.0.1:5683
//	devsim --server 127.0.0.1:5684 --keys keys.yaml --backend 127.0.0.1:5683 \
//	       --devices 1000 --mix 1.3-dhe=60,1.3-ke=20,1.2-ccm8=20 --connect-rate 150 \
//	       --pattern update=50,notify=30,read=20 --msg-rate 500 --churn 0.01 --duration 30s
//
// # Phases
//
// A run has four phases: connect (every device once: handshake, then in
// LwM2M mode Register and, if the pattern notifies, the backend's Observe;
// at --connect-rate, at most --concurrency at a time), settle (--settle,
// idle; then memory is sampled), steady (--duration or --messages: the
// message pattern at --msg-rate over the whole fleet, at most --inflight
// requests waiting, and --churn: that fraction of the connected devices
// disconnects and reconnects every second) and close. Phase changes are
// printed on stderr ("devsim: phase connect start", "devsim: phase connect
// done", "devsim: phase steady start", "devsim: phase steady done") for
// scripts, between the progress lines.
//
// # Handshakes and messages
//
// --mix weighs the profiles 1.3-dhe (DTLS 1.3 psk_dhe_ke, X25519,
// AES-128-GCM), 1.3-ke (psk_ke only), 1.3-chacha, 1.2-ccm8
// (TLS_PSK_WITH_AES_128_CCM_8), 1.2-ccm, 1.2-gcm (plain PSK) and 1.2-ecdhe
// (TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256); devices get them by smooth
// weighted round-robin, deterministically. --pattern weighs update,
// notify, read, send and register in LwM2M mode; read and notify are driven
// from the backend side, so they need the tool's own backend (--backend
// ADDR, which the gateway must forward to).
//
// --raw drops LwM2M: handshakes and confirmable CoAP requests of --size
// bytes (--method, --path), each answered by any message carrying its
// token, so any DTLS PSK CoAP server can be measured: the gateway with
// --backend --backend-kind echo, an echo server (bench/pionecho), libcoap's
// coap-server-gnutls (--method GET --path /). --no-dtls sends the same
// requests over plain UDP (its "handshakes" are socket set-ups), the
// baseline of talking to a backend directly. --source-ips spreads raw
// devices over many loopback addresses, as real devices have their own:
// the gateway limits new sessions per source IP. Raw requests are not
// retransmitted: on loopback an unanswered request is an error of its own
// kind (echo_timeout).
//
// # Benchmark phases (raw mode)
//
// bench/runner measures a server between phases and over many processes:
//
//   - --warmup: after the connect phase every connected device sends one
//     request ("warmup"), before --settle: a gateway opens a session's
//     upstream socket on its first datagram, which the steady phase's CPU
//     per request then leaves out.
//   - --wake-after D: after the steady phase the fleet stays silent for D,
//     then every connected device sends one request ("wake"); the
//     server's CPU for that wave is reported per request apart
//     (cpu_us_per_wake_request), to compare with the steady phase's.
//   - --wait-signal: the run waits for SIGUSR1 after the connect phase and
//     again before the steady phase ("devsim: phase wait start" lines).
//   - --key-offset N: devices take keys from the Nth on, so processes share
//     one key file without sharing identities.
//   - --hold: after its handshake a device drops its DTLS state without
//     close_notify and keeps only its UDP socket, a device asleep for
//     good: the server holds an idle session and the tool about 3 KB per
//     device instead of a pion Conn's 80 KB. Held devices send nothing.
//
// The server's CPU time is the sum of its threads' run times
// (/proc/PID/task/TID/schedstat, nanoseconds), or utime+stime in clock
// ticks when a thread ended between two samples.
//
// # Device lifecycles
//
// LwM2M devices can behave the way real ones do (issue 9); each device owns
// one UDP socket for its whole life, so every new handshake below comes
// from the same address and port:
//
//   - --reboot-every D: each device reboots about every D in the steady
//     phase: it forgets its DTLS session without close_notify and its
//     LwM2M state, handshakes again and Registers again (operation
//     "reboot", handshake kind "reboot").
//   - --rehandshake-idle D: a device idle for longer than D handshakes
//     again before its next request, then Updates the registration it has
//     (tinydtls's NAT heuristic; handshake kind "idle").
//   - --auto-reconnect: a device whose request goes unanswered (after
//     --ack-timeout and --max-retransmit) or whose session the gateway
//     ended handshakes again, Updates its registration, Registers again on
//     4.04, then retries (handshake kind "reconnect"). A 4.03 is an error.
//   - --sleep D --sleep-rate F: that fraction of the connected devices per
//     second turns its radio off for D (everything sent to it is lost),
//     then wakes up and Updates (operation "wake").
//   - --loss SPEC: every device's path loses, duplicates, delays or
//     reorders datagrams, handshakes included, e.g.
//     drop=0.05,dup=0.01,in-jitter=20ms or hello-drop=1 (the first
//     ClientHello of each device is lost: it is retransmitted after
//     --flight-interval). Raw mode too.
//   - --fresh-ips: every new connection binds a loopback address never
//     used before in the run, so the gateway has never seen the device;
//     --source-ips N spreads devices over N addresses instead.
//
// A handshake the gateway refuses right after it completed (an alert or
// EOF before any answer, e.g. a policy refusal after the server's
// Finished) counts as a failed handshake, with the alert in its error kind
// ("handshake_refused_alert_BadCertificate"), not as a completed one.
//
// # Flood
//
// --flood RATE sends RATE spoofed ClientHellos per second (issue 12) to the
// loopback --server for --duration (at most --flood-count), each from a
// new source address and port in 127.0.0.0/8, never answering the
// cookie: as root through a raw IPv4 socket (IP_HDRINCL) with spoofed
// sources, otherwise from a fresh UDP socket bound to a random 127/8
// address per hello (--flood-socket picks). The hellos are real pion
// DTLS 1.3 and 1.2 PSK ClientHellos (--flood-mix 1.3=1,1.2=1), captured
// once and varied in their random, session ID, key share and binder;
// --flood-repeat N sends each N times (--flood-repeat-gap apart). Any
// --server outside 127.0.0.0/8 is refused. It prints the ClientHellos and
// datagrams sent per second achieved (--json too).
//
//	devsim --flood 10000 --flood-repeat 2 --server 127.0.0.1:5684 --duration 30s --json
//
// # Key files
//
// --keys reads the gateway's own YAML key file (pskstore/file, parsed with
// file.Parse, so the file is held to the same RFC 9257 policy the gateway
// applies), or, for a name ending in ".csv", one device per line:
//
//	# comment
//	identity,key_hex,endpoint
//	device-0001,8f1c…,urn:dev:0001
//
// a text identity (no comma), the key in hex, and the LwM2M endpoint
// (optional; the identity when empty); the header line is optional. CSV keys
// carry no bindings and may make any handshake; use CSV for peers other
// than the gateway (libcoap's -k is one key for every identity). Each device
// gets a key whose bindings allow its handshake (psk_ke listed for 1.3-ke,
// legacy for DTLS 1.2 plain PSK), key i for device i when it fits; devices
// that must share a key are counted (the gateway keeps one session per
// identity). --gen-keys N --out FILE writes N fresh keys (32 bytes from
// crypto/rand, identity loadNNNNNN, endpoint urn:dev:loadNNNNNN, the
// bindings device i of the same --mix needs; YAML through file.Save, mode
// 0600, or CSV).
//
// # Output
//
// A progress line on stderr (rewritten on a terminal, every 5 s
// otherwise): devices up, handshakes ok/failed and per second, messages and
// per second, p50/p99 of the last period, errors. Then a summary on stdout,
// or JSON with --json: handshakes (ok, failed, success rate, per second in
// the connect phase, latency p50/p95/p99, by profile), requests (the same,
// by operation, including the set-up Register/Observe), reconnections,
// handshakes by kind (connect, churn, reboot, idle, reconnect) with their
// latencies, the lifecycle counts (reboots, idle re-handshakes,
// reconnections, sleeps, sessions lost, refusals), what --loss did,
// errors by kind ("handshake_timeout", "update_coap_4.03",
// "handshake_alert_HandshakeFailure", ...) with the first message of each,
// and with --server-pid the server's CPU per handshake (connect phase) and
// per request (steady phase; with --churn it includes reconnections) and
// RSS per session after --settle. Exit status: 0, 1 on an error, 2 on a
// usage error, 3 with --strict if anything failed.
//
// The tool never prints keys or identities (R9). Every loop is bounded:
// the connect phase by --devices, the steady phase by --duration and
// --messages, every handshake and request by --timeout.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	var ue usageError
	switch {
	case err == nil:
	case errors.As(err, &ue):
		fmt.Fprintf(os.Stderr, "devsim: %v\n", err)
		os.Exit(2)
	case errors.Is(err, errFailures):
		os.Exit(3)
	default:
		fmt.Fprintf(os.Stderr, "devsim: %v\n", err)
		os.Exit(1)
	}
}

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// errFailures is returned, with --strict, when a handshake or request failed.
var errFailures = errors.New("some handshakes or requests failed")
