package admin

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/lwm2m-gateway/gateway/gateway"
)

// TestRegistrationsJSON: /registrations has the documented snake_case
// keys, durations in seconds, and [] when nothing is registered.
func TestRegistrationsJSON(t *testing.T) {
	empty, _ := json.Marshal(registrationsView(nil))
	if string(empty) != `{"count":0,"registrations":[]}` {
		t.Errorf("empty view %s", empty)
	}
	b, _ := json.Marshal(registrationsView([]gateway.Registration{{IdentityTag: "id:00", Endpoint: "urn:dev:1", Location: "/rd/1",
		Lifetime: 300 * time.Second, Remote: "127.0.0.1:5000", IdleFor: 1500 * time.Millisecond}}))
	want := `{"count":1,"registrations":[{"identity_tag":"id:00","endpoint":"urn:dev:1","location":"/rd/1","lifetime":300,"remote":"127.0.0.1:5000","idle_for":1.5}]}`
	if string(b) != want {
		t.Errorf("view %s\nwant %s", b, want)
	}
}
