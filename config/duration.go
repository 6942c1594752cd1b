package config

import (
	"fmt"
	"time"

	"gopkg.in/yaml.v3"
)

// Duration is a time.Duration written in the file as a Go duration string
// ("10s", "75m", "1h30m"); a bare number is refused, for it has no unit.
// Convert with time.Duration(d).
type Duration time.Duration

// String returns the duration in time.Duration's format, e.g. "1h15m0s".
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalYAML writes the duration as a string that UnmarshalYAML reads back.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// UnmarshalYAML reads a duration string. Its errors are *yaml.TypeError so
// the decoder goes on and Parse reports them with the others.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return &yaml.TypeError{Errors: []string{
			fmt.Sprintf("line %d: cannot unmarshal %s into config.Duration", n.Line, n.ShortTag()),
		}}
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return &yaml.TypeError{Errors: []string{
			fmt.Sprintf("line %d: cannot unmarshal %s `%s` into config.Duration", n.Line, n.ShortTag(), n.Value),
		}}
	}
	*d = Duration(v)
	return nil
}
