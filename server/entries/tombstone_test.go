package entries

import (
	"context"
	"log/slog"
	"testing"

	"github.com/plinth-id/plinth/server/datastore"
)

// staleStore answers GetEntry with what it held before a delete.
type staleStore struct{ e *datastore.Entry }

func (s staleStore) EntryEventsSince(context.Context, int64) ([]datastore.EntryEvent, error) {
	return nil, nil
}

func (s staleStore) GetEntry(context.Context, string) (*datastore.Entry, error) { return s.e, nil }

// A poll that read an entry just before a local delete must not bring it back.
func TestFollowDoesNotResurrectLocalDelete(t *testing.T) {
	e := &datastore.Entry{ID: "e1", SPIFFEID: "spiffe://example.org/w", ParentID: "spiffe://example.org/a"}
	x := New("spiffe://example.org/spire/server", []*datastore.Entry{e})
	gen := x.generation() // the poll starts
	x.Delete("e1")        // a local delete lands while the poll reads
	x.apply(context.Background(), staleStore{e}, 0, gen, []datastore.EntryEvent{{Seq: 1, EntryID: "e1"}}, slog.New(slog.DiscardHandler))
	if x.Get("e1") != nil {
		t.Fatal("a stale poll brought back an entry deleted locally")
	}
	x.forgetDeletesUpTo(x.generation())
	x.apply(context.Background(), staleStore{e}, 1, x.generation(), []datastore.EntryEvent{{Seq: 2, EntryID: "e1"}}, slog.New(slog.DiscardHandler))
	if x.Get("e1") == nil {
		t.Fatal("an entry (re)created after the delete was not applied")
	}
}
