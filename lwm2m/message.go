package lwm2m

import (
	"strconv"
	"strings"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// Kind is what a CoAP message means to the gateway.
type Kind uint8

// Kinds of message. The LwM2M kinds are recognised by method and Uri-Path
// (OMA LwM2M 1.1 transport §6): the registration interface lives under "rd",
// the bootstrap interface under "bs", Send under "dp".
const (
	// Invalid is the Kind of a datagram Inspect rejected as ErrMalformed.
	Invalid Kind = iota
	// Register is POST /rd?ep=…
	Register
	// Update is POST /rd/{location…}.
	Update
	// Deregister is DELETE /rd/{location…}.
	Deregister
	// BootstrapRequest is POST /bs with a query (ep=…, pct=…).
	BootstrapRequest
	// BootstrapFinish is POST /bs without any query. The bootstrap server
	// sends it to the client; a device never does, so from a device it is a
	// Bootstrap-Request without ep.
	BootstrapFinish
	// Send is POST /dp (LwM2M 1.1 information reporting).
	Send
	// Notify is a 2.05 Content or 2.03 Valid response carrying an Observe
	// option (RFC 7641 §4.2).
	Notify
	// Response is any other response (class 2, 4 or 5).
	Response
	// Empty is a message with code 0.00: a ping (CON), an empty ACK or a RST.
	Empty
	// Other is any other request (Read, Write, Execute, Observe, …).
	Other
)

var kindNames = [...]string{
	Invalid:          "Invalid",
	Register:         "Register",
	Update:           "Update",
	Deregister:       "Deregister",
	BootstrapRequest: "BootstrapRequest",
	BootstrapFinish:  "BootstrapFinish",
	Send:             "Send",
	Notify:           "Notify",
	Response:         "Response",
	Empty:            "Empty",
	Other:            "Other",
}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// IsRequest reports whether k is a request kind (Register … Send, Other).
func (k Kind) IsRequest() bool {
	return (k >= Register && k <= Send) || k == Other
}

// DefaultLifetime is the registration lifetime a Register without lt asks
// for (OMA LwM2M Server object, resource 1; 86400 s).
const DefaultLifetime = 86400 * time.Second

// Message is what Inspect learned from one datagram.
//
// Token aliases the datagram passed to Inspect: it is valid only while that
// buffer is not reused. The strings are copies.
type Message struct {
	Type      message.Type // Confirmable, NonConfirmable, Acknowledgement or Reset
	Code      codes.Code
	MessageID uint16
	Token     message.Token // 0 to 8 bytes
	Kind      Kind
	// Observe reports an Observe option (RFC 7641), in a request or response.
	Observe bool
	// Path is the Uri-Path as "/seg/seg…" for Register, Update, Deregister,
	// BootstrapRequest, BootstrapFinish and Send ("/rd", "/rd/5a3f"); it is
	// empty for other kinds, which the gateway does not route on.
	Path string
	// Location is the Location-Path of a 2.01 Created response as
	// "/seg/seg…" ("/rd/5a3f"), empty otherwise.
	Location string
	// Params holds the query parameters of Register, Update and
	// BootstrapRequest; it is zero for other kinds.
	Params Params

	// bad is set when Inspect returned an error for this message, so that a
	// caller that ignores the error still cannot get it forwarded.
	bad bool
}

// Params are the LwM2M query parameters of a Register, Update or
// Bootstrap-Request (OMA LwM2M 1.1 core §6.1.7.1 and §6.2). Unknown
// parameters are ignored.
type Params struct {
	Endpoint string        // ep, the Endpoint Client Name
	Lifetime time.Duration // lt; DefaultLifetime for a Register without lt, zero for an Update without lt
	Version  string        // lwm2m, e.g. "1.1"
	Binding  string        // b, e.g. "U", "UQ"
	SMS      string        // sms, the MSISDN
	Queue    bool          // Q, queue mode (LwM2M 1.1; 1.0 uses b=UQ)
	// PreferredFormat is pct, the preferred content format of a
	// Bootstrap-Request; valid when HasPreferredFormat.
	PreferredFormat    message.MediaType
	HasPreferredFormat bool
}

// PathSegments returns the Uri-Path segments of m (nil when Path is empty).
func (m Message) PathSegments() []string { return segments(m.Path) }

// LocationSegments returns the Location-Path segments of m (nil when
// Location is empty).
func (m Message) LocationSegments() []string { return segments(m.Location) }

func segments(p string) []string {
	if p == "" {
		return nil
	}
	return strings.Split(p[1:], "/")
}
