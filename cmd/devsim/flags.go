package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/lwm2m-gateway/gateway/internal/devsim"
)

// pattern is a parsed --pattern: operations with weights.
type pattern struct {
	ops     []string
	weights []int
}

func (p pattern) has(op string) bool {
	for i, o := range p.ops {
		if o == op && p.weights[i] > 0 {
			return true
		}
	}
	return false
}

func (p pattern) String() string { return joinShares(p.ops, p.weights) }

func parsePattern(spec string, raw bool) (pattern, error) {
	known := func(n string) bool {
		if raw {
			return n == opEcho
		}
		for _, op := range lwm2mOps {
			if n == op {
				return true
			}
		}
		return false
	}
	shares, err := parseShares(spec, known)
	if err != nil {
		if raw {
			return pattern{}, fmt.Errorf("--pattern: %w (raw mode has only %s)", err, opEcho)
		}
		return pattern{}, fmt.Errorf("--pattern: %w (operations: %s)", err, strings.Join(lwm2mOps, ", "))
	}
	var p pattern
	for _, s := range shares {
		if s.weight > 0 {
			p.ops = append(p.ops, s.name)
			p.weights = append(p.weights, s.weight)
		}
	}
	return p, nil
}

// options are the parsed flags.
type options struct {
	server         string
	keysPath       string
	serverName     string
	raw            bool
	noDTLS         bool
	devices        int
	mix            mix
	connectRate    float64
	connectRetries int // --connect-retries
	concurrency    int
	pattern        pattern
	msgRate        float64
	msgMax         bool
	messages       int
	duration       time.Duration
	settle         time.Duration
	churn          float64
	size           int
	method         string
	path           string
	timeout        time.Duration
	inflight       int
	backendAddr    string
	backendKind    string
	serverPID      int
	sourceIPs      int
	sourcePort     int // --source-port-base: 0, the kernel chooses
	lifetime       time.Duration
	deregister     bool
	json           bool
	strict         bool
	progress       time.Duration
	genKeys        int
	out            string

	// Device lifecycles (LwM2M mode unless noted).
	rebootEvery     time.Duration // --reboot-every: mean time between two reboots of a device
	rehandshakeIdle time.Duration // --rehandshake-idle
	autoReconnect   bool          // --auto-reconnect
	sleepFor        time.Duration // --sleep
	sleepRate       float64       // --sleep-rate: fraction of the up devices that fall asleep per second
	loss            *devsim.Loss  // --loss (LwM2M and raw DTLS)
	flightInterval  time.Duration // --flight-interval (LwM2M and raw DTLS)
	freshIPs        bool          // --fresh-ips
	ackTimeout      time.Duration // --ack-timeout (CoAP ACK_TIMEOUT)
	maxRetransmit   int           // --max-retransmit (CoAP MAX_RETRANSMIT)

	// Benchmark phases (bench/runner; raw mode).
	keyOffset  int           // --key-offset: devices take keys from this index on
	hold       bool          // --hold: keep only the socket after the handshake
	waitSignal bool          // --wait-signal: SIGUSR1 gates the warm-up and the steady phase
	warmup     bool          // --warmup: one request per device before --settle
	wakeAfter  time.Duration // --wake-after: idle this long after the steady phase, then one request per device

	flood floodOptions // --flood

	// backend, when set (tests), is used instead of starting one on
	// backendAddr.
	backend *embeddedBackend
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("devsim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, "usage: devsim --server HOST:PORT --keys FILE [flags]\n       devsim --gen-keys N --out FILE [--mix SPEC] [--server-name NAME]\n       devsim --flood RATE --server 127.0.0.1:PORT --duration D [--flood-repeat N] [--flood-mix SPEC]\n\n")
		fs.PrintDefaults()
	}
	var mixSpec, patternSpec, msgRate string
	fs.StringVar(&o.server, "server", "127.0.0.1:5684", "DTLS server (gateway) `address`; with --no-dtls the plain CoAP server")
	fs.StringVar(&o.keysPath, "keys", "", "key `file`: the gateway's YAML key file, or CSV identity,key_hex,endpoint (name ending in .csv)")
	fs.StringVar(&o.serverName, "server-name", "", "SNI to send (and, with --gen-keys, to bind every key to)")
	fs.BoolVar(&o.raw, "raw", false, "no LwM2M: handshakes and fixed-size CoAP requests (--method, --path, --size), for any DTLS PSK CoAP server")
	fs.BoolVar(&o.noDTLS, "no-dtls", false, "with --raw: plain CoAP over UDP, no handshake, no keys (baseline against a backend)")
	fs.IntVar(&o.devices, "devices", 10, "number of simulated devices, 1..100000")
	fs.StringVar(&mixSpec, "mix", "1.3-dhe=100", "handshake `mix`, weights per profile: "+profileNames())
	fs.Float64Var(&o.connectRate, "connect-rate", 0, "new handshakes per second in the connect phase; 0: as fast as --concurrency allows")
	fs.IntVar(&o.connectRetries, "connect-retries", 0, "connect phase: a device whose handshake fails tries again (from the same port with --source-port-base), up to N times, after 1 s, 2 s, ... (0..10); a failure followed by a retry is counted as retried, not failed")
	fs.IntVar(&o.concurrency, "concurrency", 32, "handshakes in flight at most")
	fs.StringVar(&patternSpec, "pattern", "", "message `pattern`, weights per operation: update, notify, read, send, register (LwM2M; default update, or update=50,notify=30,read=20 with --backend); echo (--raw)")
	fs.StringVar(&msgRate, "msg-rate", "10", "messages per second over the whole fleet in the steady phase; 0: none; max: as fast as --inflight allows")
	fs.IntVar(&o.messages, "messages", 0, "stop the steady phase after this many messages; 0: only --duration")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "length of the steady phase (messages, churn); 0 skips it")
	fs.DurationVar(&o.settle, "settle", 0, "idle time after the connect phase before memory is sampled")
	fs.Float64Var(&o.churn, "churn", 0, "fraction of the connected devices that disconnect and reconnect per second, 0..1")
	fs.IntVar(&o.size, "size", 100, "raw mode: CoAP request size in bytes (padded with payload)")
	fs.StringVar(&o.method, "method", "POST", "raw mode: request method GET, POST, PUT or DELETE")
	fs.StringVar(&o.path, "path", "/echo", "raw mode: request path")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second, "bound on one handshake and on one request")
	fs.IntVar(&o.inflight, "inflight", 64, "requests in flight at most")
	fs.StringVar(&o.backendAddr, "backend", "", "run a backend on this UDP `address` (the gateway's backend): needed for read and notify")
	fs.StringVar(&o.backendKind, "backend-kind", "", "embedded backend: lwm2m (default) or echo (default with --raw)")
	fs.IntVar(&o.serverPID, "server-pid", 0, "server process to sample in /proc: CPU per handshake and request, RSS per session")
	fs.IntVar(&o.sourceIPs, "source-ips", 1, "against an IPv4 loopback server: spread devices over this many source addresses 127.1.x.y (per-IP limits, ephemeral ports), 1..65000")
	fs.IntVar(&o.sourcePort, "source-port-base", 0, "with --source-ips: device N (counted from --key-offset) binds port `P` + N / --source-ips instead of an ephemeral port: the server's own sockets on this machine keep the whole ephemeral range (a socket connected without a bind takes a port no other socket uses on any address)")
	fs.DurationVar(&o.lifetime, "lifetime", time.Hour, "LwM2M registration lifetime")
	fs.BoolVar(&o.deregister, "deregister", false, "LwM2M: De-register before closing")
	fs.BoolVar(&o.json, "json", false, "print the summary as JSON")
	fs.BoolVar(&o.strict, "strict", false, "exit 3 if any handshake or request failed")
	fs.DurationVar(&o.progress, "progress", 0, "progress line period on stderr; default 1s on a terminal, 5s otherwise; negative: none")
	fs.DurationVar(&o.rebootEvery, "reboot-every", 0, "LwM2M: each device reboots about this often (forgets its session without close_notify, handshakes again from the same port, Registers); 0: never")
	fs.DurationVar(&o.rehandshakeIdle, "rehandshake-idle", 0, "LwM2M: a device idle longer than this handshakes again from the same port before its next request (tinydtls NAT heuristic), then Updates its registration; 0: never")
	fs.BoolVar(&o.autoReconnect, "auto-reconnect", false, "LwM2M: a device whose session is gone (no answer, alert) handshakes again from the same port, Updates, and Registers again on 4.04")
	fs.DurationVar(&o.sleepFor, "sleep", 0, "LwM2M: how long a sleeping device stays silent (radio off) before it wakes and Updates; with --sleep-rate")
	fs.Float64Var(&o.sleepRate, "sleep-rate", 0, "LwM2M: fraction of the connected devices that fall asleep per second in the steady phase, 0..1")
	var lossSpec string
	fs.StringVar(&lossSpec, "loss", "", "impair every device's path: `spec` drop=P,dup=P,delay=D,jitter=D,drop-first=N (each maybe out-/in-),hello-drop=N,hvr-drop=N,sh-drop=N,seed=N")
	fs.DurationVar(&o.flightInterval, "flight-interval", 0, "DTLS handshake retransmission interval (ClientHello and later flights); 0: pion's 1s")
	fs.BoolVar(&o.freshIPs, "fresh-ips", false, "against an IPv4 loopback server: every new connection (connect phase, churn) binds a loopback address never used before in the run (127.64.0.0/10), a device the gateway has not seen")
	fs.DurationVar(&o.ackTimeout, "ack-timeout", 2*time.Second, "LwM2M: CoAP ACK_TIMEOUT of the devices (RFC 7252 §4.8)")
	fs.IntVar(&o.maxRetransmit, "max-retransmit", 4, "LwM2M: CoAP MAX_RETRANSMIT of the devices, 0..20")
	fs.IntVar(&o.keyOffset, "key-offset", 0, "use the key file from this key on (0-based): several devsim processes share one key file without sharing identities")
	fs.BoolVar(&o.hold, "hold", false, "raw DTLS: after its handshake each device drops its DTLS state without close_notify and keeps only its UDP socket (a device asleep, radio off): the server holds an idle session for a socket here; such devices send nothing")
	fs.BoolVar(&o.waitSignal, "wait-signal", false, "wait for SIGUSR1 after the connect phase and again before the steady phase (\"devsim: phase wait start\" lines), so a script can measure the server in between")
	fs.BoolVar(&o.warmup, "warmup", false, "raw mode: after the connect phase every connected device sends one request (operation \"warmup\"), before --settle and outside the server CPU figures (a gateway opens its upstream socket on a session's first datagram)")
	fs.DurationVar(&o.wakeAfter, "wake-after", 0, "raw mode: after the steady phase, stay idle this long, then every connected device sends one request (operation \"wake\", at --msg-rate); the server's CPU per wake request is reported apart")
	o.flood.register(fs)
	fs.IntVar(&o.genKeys, "gen-keys", 0, "write N fresh keys to --out and exit")
	fs.StringVar(&o.out, "out", "", "output `file` of --gen-keys (YAML key file, or CSV if it ends in .csv)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, usageError{err.Error()}
	}
	if fs.NArg() != 0 {
		return nil, usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}
	var err error
	if o.mix, err = parseMix(mixSpec); err != nil {
		return nil, usageError{err.Error()}
	}
	if o.flood.rate != 0 {
		if err := o.flood.validate(o.server, o.duration); err != nil {
			return nil, usageError{err.Error()}
		}
		return o, nil
	}
	if lossSpec != "" {
		if o.loss, err = parseLoss(lossSpec); err != nil {
			return nil, usageError{err.Error()}
		}
	}
	if o.genKeys != 0 {
		if o.genKeys < 0 || o.genKeys > 1_000_000 {
			return nil, usageError{"--gen-keys must be 1..1000000"}
		}
		if o.out == "" {
			return nil, usageError{"--gen-keys needs --out FILE"}
		}
		return o, nil
	}
	if err := o.validate(patternSpec, msgRate); err != nil {
		return nil, err
	}
	return o, nil
}

func (o *options) validate(patternSpec, msgRate string) error {
	bad := func(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }
	switch {
	case o.devices < 1 || o.devices > 100_000:
		return bad("--devices must be 1..100000")
	case o.concurrency < 1 || o.concurrency > 10_000:
		return bad("--concurrency must be 1..10000")
	case o.inflight < 1 || o.inflight > 10_000:
		return bad("--inflight must be 1..10000")
	case o.connectRate < 0:
		return bad("--connect-rate must be >= 0")
	case o.connectRetries < 0 || o.connectRetries > 10:
		return bad("--connect-retries must be 0..10")
	case o.churn < 0 || o.churn > 1:
		return bad("--churn must be 0..1")
	case o.timeout <= 0:
		return bad("--timeout must be > 0")
	case o.duration < 0 || o.duration > 24*time.Hour:
		return bad("--duration must be 0..24h")
	case o.settle < 0 || o.settle > time.Hour:
		return bad("--settle must be 0..1h")
	case o.messages < 0:
		return bad("--messages must be >= 0")
	case o.size < 16 || o.size > 60_000:
		return bad("--size must be 16..60000")
	case o.sourceIPs < 1 || o.sourceIPs > 65_000:
		return bad("--source-ips must be 1..65000")
	case o.ackTimeout < 100*time.Millisecond || o.ackTimeout > time.Minute:
		return bad("--ack-timeout must be 100ms..1m")
	case o.maxRetransmit < 0 || o.maxRetransmit > 20:
		return bad("--max-retransmit must be 0..20")
	case o.sourceIPs > 1 && o.freshIPs:
		return bad("--source-ips and --fresh-ips exclude each other")
	case o.rebootEvery < 0 || o.rehandshakeIdle < 0 || o.sleepFor < 0 || o.flightInterval < 0:
		return bad("--reboot-every, --rehandshake-idle, --sleep and --flight-interval must not be negative")
	case o.rebootEvery > 0 && o.rebootEvery < 100*time.Millisecond:
		return bad("--reboot-every must be at least 100ms")
	case o.sleepRate < 0 || o.sleepRate > 1:
		return bad("--sleep-rate must be 0..1")
	case (o.sleepRate > 0) != (o.sleepFor > 0):
		return bad("--sleep and --sleep-rate go together")
	case o.raw && (o.rebootEvery > 0 || o.rehandshakeIdle > 0 || o.autoReconnect || o.sleepRate > 0):
		return bad("--reboot-every, --rehandshake-idle, --auto-reconnect and --sleep need LwM2M mode (no --raw)")
	case o.noDTLS && (o.loss != nil || o.flightInterval > 0 || o.freshIPs):
		return bad("--loss, --flight-interval and --fresh-ips need DTLS (no --no-dtls)")
	case o.noDTLS && !o.raw:
		return bad("--no-dtls needs --raw")
	case o.keysPath == "" && !o.noDTLS:
		return bad("--keys FILE is required (see --gen-keys)")
	case o.keyOffset < 0:
		return bad("--key-offset must be >= 0")
	case o.sourcePort != 0 && (o.sourceIPs < 2 || o.sourcePort < 1024 || o.sourcePort+(o.keyOffset+o.devices-1)/o.sourceIPs > 65535):
		return bad("--source-port-base needs --source-ips > 1 and ports within 1024..65535 (port = base + (--key-offset + device) / --source-ips)")
	case o.wakeAfter < 0 || o.wakeAfter > time.Hour:
		return bad("--wake-after must be 0..1h")
	case (o.warmup || o.wakeAfter > 0) && !o.raw:
		return bad("--warmup and --wake-after need --raw")
	case o.hold && (!o.raw || o.noDTLS):
		return bad("--hold needs --raw and DTLS (no --no-dtls)")
	case o.hold && (o.warmup || o.wakeAfter > 0 || o.churn > 0 || o.loss != nil):
		return bad("--hold devices send nothing: no --warmup, --wake-after, --churn or --loss")
	}
	if msgRate == "max" {
		o.msgMax = true
	} else {
		r, err := strconv.ParseFloat(msgRate, 64)
		if err != nil || r < 0 || r > 1e7 {
			return bad("--msg-rate %q: want a number >= 0 or max", msgRate)
		}
		o.msgRate = r
	}
	if o.backendKind == "" {
		o.backendKind = backendLwM2M
		if o.raw {
			o.backendKind = backendEcho
		}
	}
	if patternSpec == "" {
		switch {
		case o.raw:
			patternSpec = opEcho
		case o.backendAddr != "" && o.backendKind == backendLwM2M:
			patternSpec = "update=50,notify=30,read=20"
		default:
			patternSpec = opUpdate
		}
	}
	p, err := parsePattern(patternSpec, o.raw)
	if err != nil {
		return usageError{err.Error()}
	}
	o.pattern = p
	if o.hold && o.duration > 0 && (o.msgMax || o.msgRate > 0) {
		return bad("--hold devices send nothing: use --msg-rate 0 (or --duration 0)")
	}
	for _, op := range p.ops {
		if needsBackend(op) && (o.backendAddr == "" || o.backendKind != backendLwM2M) {
			return bad("--pattern %s needs the tool's own LwM2M backend: --backend ADDR (and the gateway's backend pointing there)", op)
		}
	}
	return nil
}

// isTerminal reports whether w is a terminal (the progress line is then
// rewritten in place).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func (o *options) mode() string {
	switch {
	case o.noDTLS:
		return "raw-udp"
	case o.raw:
		return "raw-dtls"
	}
	return "lwm2m"
}
