package sealed

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Rekeyer is an optional capability of a key store that seals keys at rest
// (found by type assertion, like pskstore.Watcher): the file and PostgreSQL
// stores implement it.
type Rekeyer interface {
	// Rekey re-seals every key under kek, all or none, and reports the
	// state it found. Plaintext keys are re-sealed too: a rekey is how a
	// plaintext store gets sealed. Every key is checked to open under kek
	// before anything is written. Afterwards the store seals and opens with
	// kek. Key material and bindings do not change, so no session closes.
	Rekey(ctx context.Context, kek *KEK) (Rekeyed, error)
}

// Rekeyed is what a Rekey found and did.
type Rekeyed struct {
	// Keys is how many keys were re-sealed.
	Keys int
	// Plaintext is how many of them were stored in plaintext.
	Plaintext int
	// Sealed counts the others by the id of the KEK they were sealed
	// under (a key already under the new KEK, after a rekey run twice,
	// counts under the new one).
	Sealed map[string]int
}

// Found describes the state the rekey found, for the operator: "empty",
// "2 plaintext", "3 sealed under kek 0011223344556677", "1 plaintext and
// 4 sealed under kek …".
func (r Rekeyed) Found() string {
	var parts []string
	if r.Plaintext > 0 {
		parts = append(parts, fmt.Sprintf("%d plaintext", r.Plaintext))
	}
	for _, id := range slices.Sorted(maps.Keys(r.Sealed)) {
		parts = append(parts, fmt.Sprintf("%d sealed under kek %s", r.Sealed[id], id))
	}
	if len(parts) == 0 {
		return "empty"
	}
	return strings.Join(parts, " and ")
}
