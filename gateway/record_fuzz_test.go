package gateway

import (
	"bytes"
	"slices"
	"testing"
)

// FuzzRecordHeader feeds arbitrary datagrams to the demultiplexer's header
// readers and ClientHello inspection: they must never panic, a CID they
// return lies inside the datagram and has the configured length, only a
// handshake record can look like a ClientHello, a hello is only accepted
// with a served suite, and a refusal alert is never larger than the hello
// it answers.
func FuzzRecordHeader(f *testing.F) {
	srv, err := New(Config{Store: newMapStore(), Backends: map[string]string{"dm": "127.0.0.1:5683"}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte{22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 40, 1, 0, 0, 36, 0, 0, 0, 0, 0, 0, 0, 36}, 8)
	f.Add(append([]byte{25, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1}, bytes.Repeat([]byte{7}, 20)...), 8)
	f.Add(append([]byte{0x3c}, bytes.Repeat([]byte{9}, 30)...), 4)
	f.Add([]byte{}, 0)
	f.Fuzz(func(t *testing.T, p []byte, cidLen int) {
		cidLen %= 40
		cid := recordCID(p, cidLen)
		if cid != nil {
			if len(cid) != cidLen || !bytes.Contains(p, cid) {
				t.Fatalf("CID %x (len %d) for cidLen %d", cid, len(cid), cidLen)
			}
		}
		if isClientHello(p) {
			if p[0] != contentTypeHandshake {
				t.Fatal("non-handshake record taken for a ClientHello")
			}
			h, verdict := parseHello(p, srv.servesSuite)
			if verdict == helloOK && !slices.ContainsFunc(h.suites, srv.servesSuite) {
				t.Fatal("hello accepted without a served suite")
			}
			if verdict == helloNoExtensions || verdict == helloNoCommonSuite {
				if a := alertHandshakeFailure(&h); len(a) >= len(p) {
					t.Fatalf("alert of %d bytes answers a hello of %d: amplification", len(a), len(p))
				}
			}
		}
		_ = isHandshakeRecord(p)
	})
}
