package main

import (
	"testing"
	"time"

	"github.com/lwm2m-gateway/gateway/config"
)

// TestGatewayConfigFloodLimits: the limits.* of issue 12 reach the gateway,
// and a rate of 0 (config: unlimited) becomes the gateway's "unlimited".
func TestGatewayConfigFloodLimits(t *testing.T) {
	c := config.Default()
	c.Limits.MaxHandshakes = 1000
	c.Limits.PrefixHandshakeRate = 50
	c.Limits.PrefixHandshakeBurst = 70
	c.Limits.PrefixLengthIPv4 = 20
	c.Limits.PrefixLengthIPv6 = 56
	c.Limits.NewHandshakeRate = 300
	c.Limits.RecentHandshakeWindow = config.Duration(time.Hour)
	c.Limits.MaxRecentAddresses = 500
	gc := gatewayConfig(c, &keyStore{}, nil)
	if gc.MaxHandshakes != 1000 || gc.PrefixHandshakeRate != 50 || gc.PrefixHandshakeBurst != 70 || gc.PrefixLengthIPv4 != 20 ||
		gc.PrefixLengthIPv6 != 56 || gc.NewHandshakeRate != 300 || gc.RecentHandshakeWindow != time.Hour || gc.MaxRecentAddresses != 500 {
		t.Fatalf("limits not mapped: %+v", gc)
	}
	c.Limits.HandshakeRate, c.Limits.PrefixHandshakeRate, c.Limits.NewHandshakeRate = 0, 0, 0
	gc = gatewayConfig(c, &keyStore{}, nil)
	if gc.HandshakeRate >= 0 || gc.PrefixHandshakeRate >= 0 || gc.NewHandshakeRate >= 0 {
		t.Fatalf("rates of 0 (unlimited) map to %v, %v, %v; want negative (unlimited)", gc.HandshakeRate, gc.PrefixHandshakeRate, gc.NewHandshakeRate)
	}
}
