package config

import (
	"reflect"
	"strings"
)

// fieldNames maps the Go type names in yaml.v3's "field … not found in type
// config.X" messages to the YAML field names of that type, so an unknown
// field can be answered with the one the operator probably meant.
var fieldNames = func() map[string][]string {
	m := make(map[string][]string)
	var add func(t reflect.Type)
	add = func(t reflect.Type) {
		switch t.Kind() {
		case reflect.Slice, reflect.Map, reflect.Pointer:
			add(t.Elem())
			return
		case reflect.Struct:
		default:
			return
		}
		if _, ok := m[t.String()]; ok {
			return
		}
		m[t.String()] = nil
		for i := range t.NumField() {
			f := t.Field(i)
			if name, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); name != "" && name != "-" {
				m[t.String()] = append(m[t.String()], name)
			}
			add(f.Type)
		}
	}
	add(reflect.TypeFor[Config]())
	return m
}()

// suggest returns the field of typeName nearest to name (an edit distance
// of at most 2: a typo, not another word), or "".
func suggest(typeName, name string) string {
	best, bestDist := "", 3
	for _, f := range fieldNames[typeName] {
		if d := distance(name, f); d < bestDist {
			best, bestDist = f, d
		}
	}
	return best
}

// distance is the Levenshtein distance of a and b, stopping early (at 3)
// for strings of very different lengths. Hand-written: twenty lines, and
// no library of the module offers it.
func distance(a, b string) int {
	if len(a) > len(b)+2 || len(b) > len(a)+2 {
		return 3
	}
	prev, cur := make([]int, len(b)+1), make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
