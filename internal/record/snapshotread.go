package record

import (
	"encoding/binary"
	"fmt"
)

// reader decodes a snapshot; the first error sticks and later reads return
// zero values.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %v", ErrSnapshot, err)
		r.b = nil
	}
}

func (r *reader) bytes(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n > len(r.b) {
		r.fail(fmt.Errorf("truncated"))
		return nil
	}
	v := append([]byte(nil), r.b[:n]...)
	r.b = r.b[n:]
	return v
}

func (r *reader) byte() byte {
	if v := r.bytes(1); v != nil {
		return v[0]
	}
	return 0
}

func (r *reader) uint16() uint16 {
	if v := r.bytes(2); v != nil {
		return binary.BigEndian.Uint16(v)
	}
	return 0
}

func (r *reader) uint64() uint64 {
	if v := r.bytes(8); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func (r *reader) int64() int64 { return int64(r.uint64()) }

func (r *reader) short() []byte {
	n := int(r.byte())
	if n == 0 {
		return nil
	}
	return r.bytes(n)
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail(fmt.Errorf("bad varint"))
		return 0
	}
	r.b = r.b[n:]
	return v
}

// seq reads a sequence number no greater than limit.
func (r *reader) seq(limit uint64) uint64 {
	v := r.uvarint()
	if v > limit {
		r.fail(fmt.Errorf("sequence number %d out of range", v))
	}
	return v
}

// epoch reads a DTLS 1.3 application epoch: from 3 to 2^16-1.
func (r *reader) epoch() uint64 {
	v := r.uvarint()
	if r.err == nil && (v < 3 || v >= 1<<16) {
		r.fail(fmt.Errorf("epoch %d out of range", v))
	}
	return v
}

func (r *reader) window(k *keys) {
	k.win.next = r.seq(maxSeq + 1)
	k.win.seen = r.uint64()
}
