package record

import "errors"

// Errors for what callers branch on or count. Open's drop reasons (ErrMalformed,
// ErrReplay, ErrAuth, ErrEpoch, ErrCID) are returned wrapped with context;
// test them with errors.Is.
var (
	// ErrParams: New or ToPionState got state it cannot use (unknown suite,
	// handshake not complete, a client's state, bad lengths, a key log that
	// contradicts the state).
	ErrParams = errors.New("record: unusable parameters")

	// ErrSnapshot: UnmarshalBinary got bytes that are not a valid snapshot.
	ErrSnapshot = errors.New("record: bad snapshot")

	// ErrMalformed: a record (or datagram) that does not parse: truncated,
	// oversized, a bad header, or authenticated content that is invalid.
	ErrMalformed = errors.New("record: malformed record")

	// ErrReplay: a record whose sequence number was already accepted, or is
	// older than the replay window.
	ErrReplay = errors.New("record: replayed record")

	// ErrAuth: a record that failed authentication (forged or corrupted).
	ErrAuth = errors.New("record: record failed authentication")

	// ErrEpoch: a record of an epoch this Conn does not read: plaintext
	// epoch 0 (handshake retransmissions), an unknown or expired epoch.
	ErrEpoch = errors.New("record: record of an epoch not read")

	// ErrCID: a record with a Connection ID other than the one issued, or
	// without one when one was issued (RFC 9146 §3, RFC 9147 §9).
	ErrCID = errors.New("record: wrong connection ID")

	// ErrClosed: the peer closed the session (close_notify or a fatal
	// alert), or this side sent close_notify.
	ErrClosed = errors.New("record: session closed")

	// ErrLimit: the write key reached its sequence-number or AEAD usage
	// limit (RFC 9147 §4.5.3); Seal refuses rather than wrap or overuse the
	// key. DTLS 1.3 recovers once the peer acknowledges the KeyUpdate that
	// Seal started; DTLS 1.2 needs a new handshake. Also returned by Open
	// when a 1.3 read key exceeded its integrity limit.
	ErrLimit = errors.New("record: key usage limit reached")

	// ErrTooLarge: a payload longer than one record may carry (2^14 bytes).
	ErrTooLarge = errors.New("record: payload too large for one record")
)
