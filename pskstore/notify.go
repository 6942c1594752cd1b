package pskstore

import (
	"bytes"
	"context"
	"sync"
)

// Notifier fans Changes out to watchers; backends embed one to implement
// Watcher. The zero value is ready to use and it is safe for concurrent use.
//
// Notify never blocks and never drops a change: each watcher has its own
// unbounded queue drained by its own goroutine, so a slow watcher delays
// only itself and still sees every revocation, in order (R10). A queue lives
// until the watcher's context is done.
type Notifier struct {
	mu   sync.Mutex
	subs map[*subscriber]struct{}
}

var _ Watcher = (*Notifier)(nil)

type subscriber struct {
	mu    sync.Mutex
	queue []Change
	wake  chan struct{} // capacity 1: "the queue may be non-empty"
}

// Watch returns a channel that receives every change notified after Watch
// returns, in order, and is closed when ctx is done. If ctx is already done
// it returns ctx.Err().
func (n *Notifier) Watch(ctx context.Context) (<-chan Change, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s := &subscriber{wake: make(chan struct{}, 1)}
	n.mu.Lock()
	if n.subs == nil {
		n.subs = make(map[*subscriber]struct{})
	}
	n.subs[s] = struct{}{}
	n.mu.Unlock()

	out := make(chan Change)
	go func() {
		defer close(out)
		defer func() {
			n.mu.Lock()
			delete(n.subs, s)
			n.mu.Unlock()
		}()
		for {
			select {
			case <-ctx.Done():
				return
			case <-s.wake:
			}
			for {
				c, ok := s.pop()
				if !ok {
					break
				}
				select {
				case out <- c:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}

func (s *subscriber) pop() (Change, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) == 0 {
		s.queue = nil // let a drained backlog be collected
		return Change{}, false
	}
	c := s.queue[0]
	s.queue[0] = Change{}
	s.queue = s.queue[1:]
	return c, true
}

// Notify queues changes for every current watcher. Each watcher receives its
// own copy of the identities. Backends call it while holding the lock that
// orders their updates, so watchers see changes in the order they happened.
func (n *Notifier) Notify(changes ...Change) {
	if len(changes) == 0 {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for s := range n.subs {
		s.mu.Lock()
		for _, c := range changes {
			s.queue = append(s.queue, Change{Kind: c.Kind, Identity: bytes.Clone(c.Identity)})
		}
		s.mu.Unlock()
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}
