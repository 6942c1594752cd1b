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
// It does not own any gateway policy (SNI binding, key-exchange mode checks,
// endpoint binding): the gateway enforces those, devsim only lets a test
// produce the traffic that exercises them. It never logs PSKs, and logs no
// PSK identities either (R9).
package devsim
