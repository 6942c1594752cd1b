package record

// window is a 64-record anti-replay window (RFC 6347 §4.1.2.6, RFC 9147
// §4.5.1) for one read epoch. next is one more than the highest sequence
// number accepted (0: none yet); bit i of seen stands for next-1-i.
type window struct {
	next uint64
	seen uint64
}

const windowSize = 64

// check reports whether seq may still be accepted: newer than everything
// seen, or inside the window and not seen. It changes nothing.
func (w *window) check(seq uint64) bool {
	if seq >= w.next {
		return true
	}
	d := w.next - 1 - seq
	return d < windowSize && w.seen&(1<<d) == 0
}

// newer reports whether seq is beyond every number accepted so far.
func (w *window) newer(seq uint64) bool { return seq >= w.next }

// accept records seq as seen. Call only after the record authenticated and
// check(seq) held.
func (w *window) accept(seq uint64) {
	if seq >= w.next {
		shift := seq + 1 - w.next
		if shift >= windowSize {
			w.seen = 0
		} else {
			w.seen <<= shift
		}
		w.seen |= 1
		w.next = seq + 1
		return
	}
	w.seen |= 1 << (w.next - 1 - seq)
}

// restoreAbove sets a window in which everything up to and including highest
// counts as seen: what pion's exported state can tell (its highest sequence
// number, not its bitmap), the same cutoff pion applies on Resume.
func restoreAbove(highest uint64) window {
	return window{next: highest + 1, seen: ^uint64(0)}
}
