package record

import (
	"bytes"
	"encoding/gob"
	"errors"
	"sync"
)

// Decoding pion's exported state is a tenth of a gateway handshake's CPU
// when done with a fresh gob.Decoder (bench/BENCHMARKS.md, the handshake
// profile: most of it compiling the decoder for pion's types, again at every
// hand-over). Every State.MarshalBinary output is a gob stream of its own:
// the type definitions of pion's serializedState, then one value. gob's
// type ids are process-wide and an encoder sends the definitions in the
// order it meets the types, so every output of one pion build starts with
// the same definition bytes. stateDecoder feeds them to one long-lived
// decoder once, and afterwards only the value message of each output: gob
// decodes many values after one set of definitions, with the compiled
// decoder cached. Outputs whose definitions differ from the first ones (a
// change the process could not make, but checked) and any error take a
// fresh decoder, as before. Hand-written because encoding/gob offers no way
// to reuse a compiled decoder across streams.
type stateDecoder struct {
	mu   sync.Mutex
	defs []byte        // the type definitions of the first stream
	in   *bytes.Buffer // what dec reads: a ByteReader, so gob reads exactly one message
	dec  *gob.Decoder
	hits uint64 // decodes served by the long-lived decoder (for tests)
}

var pionStates stateDecoder

// decode decodes one State.MarshalBinary output into s.
func (d *stateDecoder) decode(b []byte, s *pionState) error {
	defs, value, err := splitGobStream(b)
	if err != nil {
		return freshDecode(b, s)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dec != nil && bytes.Equal(defs, d.defs) {
		d.in.Write(value)
		if err := d.dec.Decode(s); err == nil && d.in.Len() == 0 {
			d.hits++
			return nil
		}
		// Something unexpected: start over with this stream.
		d.dec, d.defs = nil, nil
		*s = pionState{}
	}
	in := bytes.NewBuffer(nil)
	in.Write(b)
	dec := gob.NewDecoder(in)
	if err := dec.Decode(s); err != nil {
		return err
	}
	if in.Len() == 0 {
		d.in, d.dec, d.defs = in, dec, bytes.Clone(defs)
	}
	return nil
}

func freshDecode(b []byte, s *pionState) error {
	return gob.NewDecoder(bytes.NewReader(b)).Decode(s)
}

// splitGobStream splits a gob stream (encoding/gob's doc, "Encoding
// details") into its type-definition messages (negative type id) and the
// one value message after them, each with its length prefix.
func splitGobStream(b []byte) (defs, value []byte, err error) {
	rest := b
	for len(rest) > 0 {
		n, hdr, ok := gobUint(rest)
		if !ok || n > uint64(len(rest)-hdr) || n == 0 {
			return nil, nil, errGobFraming
		}
		msg := rest[:hdr+int(n)]
		id, _, ok := gobUint(rest[hdr:])
		if !ok {
			return nil, nil, errGobFraming
		}
		rest = rest[len(msg):]
		if id&1 == 1 { // a negative int: a type definition
			if value != nil {
				return nil, nil, errGobFraming
			}
			defs = b[:len(b)-len(rest)]
			continue
		}
		if value != nil {
			return nil, nil, errGobFraming
		}
		value = msg
	}
	if value == nil {
		return nil, nil, errGobFraming
	}
	return defs, value, nil
}

var errGobFraming = errors.New("record: not a gob stream of type definitions and one value")

// gobUint reads a gob unsigned integer: one byte below 128, else the
// negated byte count followed by that many big-endian bytes.
func gobUint(b []byte) (v uint64, n int, ok bool) {
	if len(b) == 0 {
		return 0, 0, false
	}
	if b[0] < 0x80 {
		return uint64(b[0]), 1, true
	}
	count := int(-int8(b[0]))
	if count < 1 || count > 8 || len(b) < 1+count {
		return 0, 0, false
	}
	for _, c := range b[1 : 1+count] {
		v = v<<8 | uint64(c)
	}
	return v, 1 + count, true
}
