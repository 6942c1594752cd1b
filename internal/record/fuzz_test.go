package record

import (
	"bytes"
	"testing"
)

// FuzzOpen: any datagram, against any recorded session: no panic; a
// datagram in which nothing authenticated leaves the Conn's state exactly as
// it was; the Conn can still seal afterwards unless the peer closed it.
func FuzzOpen(f *testing.F) {
	sessions := loadRecorded(f)
	for i, r := range sessions {
		for _, d := range r.Datagrams {
			f.Add(byte(i), d)
			f.Add(byte(i), d[:len(d)/2])
			f.Add(byte(i), append(bytes.Clone(d), d...)) // two records, the second a replay
		}
		for _, d := range r.Flight {
			f.Add(byte(i), d)
		}
	}
	f.Fuzz(func(t *testing.T, which byte, datagram []byte) {
		r := sessions[int(which)%len(sessions)]
		c, err := New(r.params())
		if err != nil {
			t.Fatal(err)
		}
		before := snapshot(t, c)
		var d Datagram
		err = c.Open(&d, bytes.Clone(datagram), recordedNow)
		if d.Authenticated != (err == nil) {
			t.Fatalf("authenticated %v with error %v", d.Authenticated, err)
		}
		if !d.Authenticated {
			if !bytes.Equal(before, snapshot(t, c)) {
				t.Fatal("state changed without an authenticated record")
			}
			if d.Newer || d.Closed || len(d.Payloads) != 0 || len(d.Replies) != 0 || d.KeysChanged {
				t.Fatalf("unauthenticated datagram had effects: %+v", d)
			}
		}
		if !c.Closed() {
			if _, err := c.Seal(nil, []byte("after")); err != nil {
				t.Fatalf("seal after open: %v", err)
			}
		}
	})
}

// FuzzUnmarshal: any bytes as a snapshot: no panic; what is accepted
// re-encodes stably and can seal, open and poll without panicking.
func FuzzUnmarshal(f *testing.F) {
	sessions := loadRecorded(f)
	for _, r := range sessions {
		c, err := New(r.params())
		if err != nil {
			f.Fatal(err)
		}
		f.Add(snapshot(f, c))
		var d Datagram
		for _, dg := range r.Datagrams {
			_ = c.Open(&d, bytes.Clone(dg), recordedNow)
		}
		f.Add(snapshot(f, c))
	}
	probe := sessions[0].Datagrams[0]
	f.Fuzz(func(t *testing.T, data []byte) {
		c := new(Conn)
		if err := c.UnmarshalBinary(data); err != nil {
			return
		}
		b1 := snapshot(t, c)
		c2 := new(Conn)
		if err := c2.UnmarshalBinary(b1); err != nil {
			t.Fatalf("re-encoded snapshot refused: %v", err)
		}
		if !bytes.Equal(b1, snapshot(t, c2)) {
			t.Fatal("snapshot encoding not stable")
		}
		var d Datagram
		_ = c.Open(&d, bytes.Clone(probe), recordedNow)
		_, _ = c.Seal(nil, []byte("x"))
		_ = c.Poll(recordedNow)
		_, _ = c.ToPionState()
	})
}
