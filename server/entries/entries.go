// Package entries is the server's in-memory index of registration entries.
// Agent syncs and SVID requests are answered from it, so sync traffic does
// not become database traffic.
//
// The index is fed two ways: the API handlers Put and Delete what they just
// wrote, and Follow reads the datastore's entry events so that changes made
// by another server on the same database arrive too. Every change closes the
// channel returned by Changed, which is how agents get pushed updates.
package entries

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/plinth-id/plinth/attestors"
	"github.com/plinth-id/plinth/server/datastore"
)

// Index holds every registration entry, indexed by ID and by parent ID.
// It is safe for concurrent use. Entries handed out are shared: callers must
// not modify them.
type Index struct {
	serverID string

	mu       sync.RWMutex
	byID     map[string]*datastore.Entry
	children map[string]map[string]*datastore.Entry
	sorted   []string // IDs in order; nil when stale
	changed  chan struct{}
	// gen counts changes; deleted holds the gen at which an ID was deleted,
	// so Follow does not bring back an entry it read just before a local
	// delete (see putUnlessDeletedSince).
	gen     uint64
	deleted map[string]uint64
}

// New returns an index over entries. serverID is the server's SPIFFE ID:
// entries whose parent is the server are node aliases, matched against an
// agent's selectors.
func New(serverID string, es []*datastore.Entry) *Index {
	x := &Index{
		serverID: serverID,
		byID:     make(map[string]*datastore.Entry, len(es)),
		children: make(map[string]map[string]*datastore.Entry),
		changed:  make(chan struct{}),
		deleted:  make(map[string]uint64),
	}
	for _, e := range es {
		x.putLocked(e)
	}
	return x
}

// Put adds or replaces an entry. An older revision than the one held is
// ignored, so Put and Follow can race without going backwards.
func (x *Index) Put(e *datastore.Entry) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.putIfNewerLocked(e)
}

// putUnlessDeletedSince puts e unless it was deleted after generation gen.
func (x *Index) putUnlessDeletedSince(e *datastore.Entry, gen uint64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.deleted[e.ID] > gen {
		return
	}
	x.putIfNewerLocked(e)
}

func (x *Index) putIfNewerLocked(e *datastore.Entry) {
	if old, ok := x.byID[e.ID]; ok && old.RevisionNumber > e.RevisionNumber {
		return
	}
	x.putLocked(e)
	x.notifyLocked()
}

func (x *Index) putLocked(e *datastore.Entry) {
	if old, ok := x.byID[e.ID]; ok {
		x.removeLocked(old)
	} else {
		x.sorted = nil
	}
	x.byID[e.ID] = e
	kids := x.children[e.ParentID]
	if kids == nil {
		kids = make(map[string]*datastore.Entry)
		x.children[e.ParentID] = kids
	}
	kids[e.ID] = e
}

func (x *Index) removeLocked(e *datastore.Entry) {
	delete(x.byID, e.ID)
	if kids := x.children[e.ParentID]; kids != nil {
		delete(kids, e.ID)
		if len(kids) == 0 {
			delete(x.children, e.ParentID)
		}
	}
}

// Delete removes the entry with id, if held.
func (x *Index) Delete(id string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if e, ok := x.byID[id]; ok {
		x.removeLocked(e)
		x.sorted = nil
		x.notifyLocked()
		x.deleted[id] = x.gen
	}
}

// generation returns the change counter.
func (x *Index) generation() uint64 {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.gen
}

// forgetDeletesUpTo drops the tombstones a later poll can no longer race.
func (x *Index) forgetDeletesUpTo(gen uint64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for id, g := range x.deleted {
		if g <= gen {
			delete(x.deleted, id)
		}
	}
}

func (x *Index) notifyLocked() {
	x.gen++
	close(x.changed)
	x.changed = make(chan struct{})
}

// Changed returns a channel closed at the next change.
func (x *Index) Changed() <-chan struct{} {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.changed
}

// Get returns the entry with id, or nil.
func (x *Index) Get(id string) *datastore.Entry {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.byID[id]
}

// Len returns how many entries the index holds.
func (x *Index) Len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.byID)
}

// Page calls keep for entries in ID order, starting after the ID after
// (empty = from the start), and returns up to limit entries for which keep
// is true, plus the ID to continue after ("" when there are no more).
// limit <= 0 means no limit.
func (x *Index) Page(after string, limit int, keep func(*datastore.Entry) bool) ([]*datastore.Entry, string) {
	x.mu.Lock()
	if x.sorted == nil {
		x.sorted = make([]string, 0, len(x.byID))
		for id := range x.byID {
			x.sorted = append(x.sorted, id)
		}
		slices.Sort(x.sorted)
	}
	ids := x.sorted
	x.mu.Unlock()

	x.mu.RLock()
	defer x.mu.RUnlock()
	start, _ := slices.BinarySearch(ids, after)
	if after != "" && start < len(ids) && ids[start] == after {
		start++
	}
	var out []*datastore.Entry
	for i := start; i < len(ids); i++ {
		e, ok := x.byID[ids[i]]
		if !ok || (keep != nil && !keep(e)) {
			continue
		}
		out = append(out, e)
		if limit > 0 && len(out) == limit {
			if i+1 < len(ids) {
				return out, ids[i]
			}
			break
		}
	}
	return out, ""
}

// Authorized returns the entries an agent may receive: every entry whose
// parent is the agent, or a node alias whose selectors the agent has, and,
// recursively, the entries parented by any of those.
func (x *Index) Authorized(agentID string, selectors []attestors.Selector) []*datastore.Entry {
	x.mu.RLock()
	defer x.mu.RUnlock()
	have := make(map[attestors.Selector]bool, len(selectors)+1)
	for _, s := range selectors {
		have[s] = true
	}
	// SPIRE gives every agent the selector spiffe_id:<its ID>; join-token
	// aliases (`token generate -spiffeID`) select on it.
	have[attestors.Selector{Type: "spiffe_id", Value: agentID}] = true

	roots := []string{agentID}
	for _, e := range x.children[x.serverID] {
		if SelectorsSubset(e.Selectors, have) {
			roots = append(roots, e.SPIFFEID)
		}
	}
	var out []*datastore.Entry
	seen := map[string]bool{}
	visited := map[string]bool{}
	for len(roots) > 0 {
		parent := roots[len(roots)-1]
		roots = roots[:len(roots)-1]
		if visited[parent] {
			continue
		}
		visited[parent] = true
		for _, e := range x.children[parent] {
			if seen[e.ID] {
				continue
			}
			seen[e.ID] = true
			out = append(out, e)
			roots = append(roots, e.SPIFFEID)
		}
	}
	slices.SortFunc(out, func(a, b *datastore.Entry) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out
}

// SelectorsSubset reports whether every selector of want is in have.
func SelectorsSubset(want []attestors.Selector, have map[attestors.Selector]bool) bool {
	for _, s := range want {
		if !have[s] {
			return false
		}
	}
	return true
}

// Store is the part of the datastore Follow reads.
type Store interface {
	EntryEventsSince(ctx context.Context, seq int64) ([]datastore.EntryEvent, error)
	GetEntry(ctx context.Context, id string) (*datastore.Entry, error)
}

// Follow applies entry events written after seq (by this server or another
// one on the same database) every interval, until ctx ends.
func (x *Index) Follow(ctx context.Context, s Store, seq int64, interval time.Duration, log *slog.Logger) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		gen := x.generation()
		events, err := s.EntryEventsSince(ctx, seq)
		if err != nil {
			log.Warn("could not read entry events; will retry", "error", err)
			continue
		}
		seq = x.apply(ctx, s, seq, gen, events, log)
		x.forgetDeletesUpTo(gen)
	}
}

// apply applies events in order and returns the last sequence applied. It
// stops at the first entry it cannot read, to retry from there.
// Entries deleted locally after gen are not brought back.
func (x *Index) apply(ctx context.Context, s Store, seq int64, gen uint64, events []datastore.EntryEvent, log *slog.Logger) int64 {
	for _, ev := range events {
		e, err := s.GetEntry(ctx, ev.EntryID)
		switch {
		case errors.Is(err, datastore.ErrNotFound):
			if x.Get(ev.EntryID) != nil {
				x.Delete(ev.EntryID)
			}
		case err != nil:
			log.Warn("could not read changed entry; will retry", "entry_id", ev.EntryID, "error", err)
			return seq
		default:
			if old := x.Get(e.ID); old == nil || old.RevisionNumber < e.RevisionNumber {
				x.putUnlessDeletedSince(e, gen)
			}
		}
		seq = ev.Seq
	}
	return seq
}
