package lwm2m

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// coap describes a message for the test helpers, encoded by go-coap's own
// UDP coder so the tests do not depend on a second hand-written encoder.
type coap struct {
	typ      message.Type // zero value is Confirmable
	code     codes.Code
	mid      uint16
	token    string
	path     []string // Uri-Path segments
	query    []string // Uri-Query options, one "name=value" each
	location []string // Location-Path segments
	observe  bool     // Observe option with value 0
	opts     []message.Option
	payload  string
}

// req is a CON request to path ("/rd/5a3f" becomes two Uri-Path options;
// "" none) with the given query options and token "tok1".
func req(code codes.Code, path string, query ...string) coap {
	c := coap{code: code, mid: 0x1234, token: "tok1", query: query}
	if path != "" {
		c.path = strings.Split(strings.TrimPrefix(path, "/"), "/")
	}
	return c
}

// resp is an ACK response with token "tok1".
func resp(code codes.Code) coap {
	return coap{typ: message.Acknowledgement, code: code, mid: 0x1234, token: "tok1"}
}

func (c coap) withType(t message.Type) coap { c.typ = t; return c }
func (c coap) withToken(tok string) coap    { c.token = tok; return c }
func (c coap) withObserve() coap            { c.observe = true; return c }
func (c coap) withLocation(p string) coap {
	c.location = strings.Split(strings.TrimPrefix(p, "/"), "/")
	return c
}

func (c coap) encode(tb testing.TB) []byte {
	tb.Helper()
	var opts message.Options
	add := func(id message.OptionID, v string) {
		opts = opts.Add(message.Option{ID: id, Value: []byte(v)})
	}
	if c.observe {
		add(message.Observe, "")
	}
	for _, s := range c.location {
		add(message.LocationPath, s)
	}
	for _, s := range c.path {
		add(message.URIPath, s)
	}
	for _, s := range c.query {
		add(message.URIQuery, s)
	}
	for _, o := range c.opts {
		opts = opts.Add(o)
	}
	m := message.Message{
		Type:      c.typ,
		Code:      c.code,
		MessageID: int32(c.mid),
		Token:     []byte(c.token),
		Options:   opts,
	}
	if c.payload != "" {
		m.Payload = []byte(c.payload)
	}
	size, err := coder.DefaultCoder.Size(m)
	if err != nil {
		tb.Fatalf("size: %v", err)
	}
	buf := make([]byte, size)
	if _, err := coder.DefaultCoder.Encode(m, buf); err != nil {
		tb.Fatalf("encode: %v", err)
	}
	return buf
}

// inspect encodes c and inspects it, failing the test on error.
func (c coap) inspect(tb testing.TB) Message {
	tb.Helper()
	m, err := Inspect(c.encode(tb))
	if err != nil {
		tb.Fatalf("Inspect: %v", err)
	}
	return m
}

// captured returns the datagram of testdata/name.hex.
func captured(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := readHex(filepath.Join("testdata", name+".hex"))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// readHex reads a .hex file: hex digits and spaces, '#' starts a comment.
func readHex(path string) ([]byte, error) {
	f, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var digits strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(f))
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		digits.WriteString(strings.Join(strings.Fields(line), ""))
	}
	return hex.DecodeString(digits.String())
}

// allCaptured returns every datagram in testdata, by file name.
func allCaptured(tb testing.TB) map[string][]byte {
	tb.Helper()
	names, err := filepath.Glob(filepath.Join("testdata", "*.hex"))
	if err != nil || len(names) == 0 {
		tb.Fatalf("no testdata: %v", err)
	}
	out := make(map[string][]byte, len(names))
	for _, n := range names {
		b, err := readHex(n)
		if err != nil {
			tb.Fatalf("%s: %v", n, err)
		}
		out[strings.TrimSuffix(filepath.Base(n), ".hex")] = b
	}
	return out
}
