package cache

import (
	"github.com/plinth-id/plinth/attestors"
)

// Subscriber receives the updates of one workload.
type Subscriber struct {
	c         *Cache
	selectors []attestors.Selector
	ch        chan *Update
	last      []Identity
}

// Subscribe registers a workload with its selectors. The current state is
// waiting on Updates at once.
func (c *Cache) Subscribe(selectors []attestors.Selector) *Subscriber {
	s := &Subscriber{c: c, selectors: selectors, ch: make(chan *Update, 1)}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.subs[s] = struct{}{}
	c.publishLocked(s, true)
	return s
}

// Updates delivers the latest state; an update not yet read is replaced by
// a newer one, so a slow workload never holds the cache back.
func (s *Subscriber) Updates() <-chan *Update { return s.ch }

// Close unregisters the subscriber.
func (s *Subscriber) Close() {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	delete(s.c.subs, s)
}

func (c *Cache) publishLocked(s *Subscriber, bundleChanged bool) {
	ids := c.matchLocked(s.selectors)
	if !bundleChanged && sameIdentities(ids, s.last) {
		return
	}
	s.last = ids
	u := &Update{Identities: ids, Bundle: c.bundle}
	select {
	case <-s.ch:
	default:
	}
	s.ch <- u
}

func sameIdentities(a, b []Identity) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].SVID != b[i].SVID {
			return false
		}
	}
	return true
}
