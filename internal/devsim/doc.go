// Package devsim simulates the two ends the gateway sits between: LwM2M
// devices that speak CoAP over DTLS 1.3 or 1.2 with external PSKs
// ([Device]), and a minimal LwM2M server that speaks plain CoAP over UDP
// ([Backend]).
//
// It is used by the gateway's demo subcommand, by the integration tests and
// by the load tool, so it is an ordinary package, not a _test package.
//
// devsim owns the client side of the DTLS handshake (pion/dtls/v4 options,
// including offering only psk_ke through a ClientHello hook), a small CoAP
// message layer over the go-coap codec (confirmable exchanges with RFC 7252
// §4.2 retransmission, §4.5 deduplication, token and Message ID matching,
// RFC 7641 observations), and the handful of LwM2M interfaces a test needs:
// Register, Update, De-register, Bootstrap-Request, Send, Read and Observe.
//
// A Device owns one UDP socket for its whole life and runs one DTLS session
// at a time over it, so it can do what real devices do (issue 9): Reboot
// (forget the session without close_notify, handshake again from the same
// address and port, Register again), Rehandshake, re-handshake after an
// idle time (DeviceConfig.RehandshakeIdle), Reconnect after its session
// is gone (Update its registration, Register again on 4.04;
// DeviceConfig.AutoReconnect does it by itself), and Sleep with its radio
// off. LossyConn (DeviceConfig.Loss) impairs a path: loss, duplication,
// delay, reordering, and the loss of given handshake messages, which makes
// pion retransmit its ClientHello. A session the gateway ends is reported
// as ErrSessionLost with the alert it sent (AlertOf), and as ErrRefused when
// it ended before any answer came back. Relay is a pion stand-in for the
// gateway, for tests of devsim and of the load tool.
//
// It does not own any gateway policy (SNI binding, key-exchange mode checks,
// endpoint binding): the gateway enforces those, devsim only lets a test
// produce the traffic that exercises them. It never logs PSKs, and logs no
// PSK identities either (R9).
package devsim
