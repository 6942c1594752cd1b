package statestore

// set is the in-memory content of a state file, its entries by key: the
// file backends keep it and rewrite the file from it on every save.
type set[T any] map[string]T

// values returns the entries, in no particular order.
func (s set[T]) values() []T {
	out := make([]T, 0, len(s))
	for _, v := range s {
		out = append(out, v)
	}
	return out
}

// apply forgets the keys in del, then stores put under key(entry).
func (s set[T]) apply(put []T, del [][]byte, key func(T) []byte) {
	for _, k := range del {
		delete(s, string(k))
	}
	for _, v := range put {
		s[string(key(v))] = v
	}
}
