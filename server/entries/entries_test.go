package entries_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/plinth-id/plinth/attestors"
	"github.com/plinth-id/plinth/server/datastore"
	"github.com/plinth-id/plinth/server/entries"
)

const (
	serverID = "spiffe://example.org/spire/server"
	agentA   = "spiffe://example.org/spire/agent/a"
	agentB   = "spiffe://example.org/spire/agent/b"
	agentC   = "spiffe://example.org/spire/agent/c"
	agentJ   = "spiffe://example.org/spire/agent/join_token/tok"
)

func sel(ss ...string) []attestors.Selector {
	var out []attestors.Selector
	for _, s := range ss {
		p, err := attestors.ParseSelector(s)
		if err != nil {
			panic(err)
		}
		out = append(out, p)
	}
	return attestors.SortSelectors(out)
}

func entry(id, spiffeID, parentID string, selectors ...string) *datastore.Entry {
	return &datastore.Entry{ID: id, SPIFFEID: spiffeID, ParentID: parentID, Selectors: sel(selectors...)}
}

func ids(es []*datastore.Entry) []string {
	out := []string{}
	for _, e := range es {
		out = append(out, e.ID)
	}
	return out
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestAuthorized(t *testing.T) {
	x := entries.New(serverID, []*datastore.Entry{
		entry("w1", "spiffe://example.org/w1", agentA, "unix:uid:1"),
		entry("w1-child", "spiffe://example.org/w1/child", "spiffe://example.org/w1", "unix:uid:2"),
		entry("w1-grandchild", "spiffe://example.org/w1/child/gc", "spiffe://example.org/w1/child", "unix:uid:3"),
		entry("w3", "spiffe://example.org/w3", agentB, "unix:uid:1"),
		// A node alias: agents having both selectors are spiffe://example.org/group.
		entry("alias", "spiffe://example.org/group", serverID, "tpm:ek:1", "tpm:pcr:7"),
		entry("w4", "spiffe://example.org/w4", "spiffe://example.org/group", "unix:uid:1"),
		// A join-token alias selects the agent by its own ID.
		entry("jt-alias", "spiffe://example.org/jt-alias", serverID, "spiffe_id:"+agentJ),
		entry("w5", "spiffe://example.org/w5", "spiffe://example.org/jt-alias", "unix:uid:1"),
		// A cycle below agent C: c1 is parent of c2 and c2 of c1.
		entry("c0", "spiffe://example.org/c1", agentC, "unix:uid:1"),
		entry("c1", "spiffe://example.org/c2", "spiffe://example.org/c1", "unix:uid:2"),
		entry("c2", "spiffe://example.org/c1", "spiffe://example.org/c2", "unix:uid:3"),
	})
	for _, c := range []struct {
		name      string
		agent     string
		selectors []attestors.Selector
		want      []string
	}{
		{"direct children and their descendants", agentA, nil, []string{"w1", "w1-child", "w1-grandchild"}},
		{"not another agent's entries", agentB, nil, []string{"w3"}},
		{"node alias needs all its selectors", agentB, sel("tpm:ek:1"), []string{"w3"}},
		{"node alias with a subset of the agent's selectors", agentB, sel("tpm:ek:1", "tpm:pcr:7", "tpm:pcr:8"), []string{"w3", "w4"}},
		{"node alias alone", "spiffe://example.org/spire/agent/d", sel("tpm:ek:1", "tpm:pcr:7"), []string{"w4"}},
		{"join-token alias by the implicit spiffe_id selector", agentJ, nil, []string{"w5"}},
		{"cycles end", agentC, nil, []string{"c0", "c1", "c2"}},
		{"unknown agent", "spiffe://example.org/spire/agent/nobody", nil, []string{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := ids(x.Authorized(c.agent, c.selectors)); !slices.Equal(got, c.want) {
				t.Errorf("Authorized(%s, %v) = %v, want %v", c.agent, c.selectors, got, c.want)
			}
		})
	}
}

func TestPutIgnoresOlderRevision(t *testing.T) {
	x := entries.New(serverID, nil)
	e := entry("e", "spiffe://example.org/w", agentA, "unix:uid:1")
	e.RevisionNumber = 2
	x.Put(e)

	older := entry("e", "spiffe://example.org/w", agentB, "unix:uid:1")
	older.RevisionNumber = 1
	changed := x.Changed()
	x.Put(older)
	if got := x.Get("e"); got != e {
		t.Errorf("Get after an older Put = %+v, want revision 2", got)
	}
	if isClosed(changed) {
		t.Error("Changed fired for an ignored Put")
	}

	// A newer revision that moves the entry to another parent.
	newer := entry("e", "spiffe://example.org/w", agentB, "unix:uid:1")
	newer.RevisionNumber = 3
	x.Put(newer)
	if !isClosed(changed) {
		t.Error("Changed did not fire for a newer Put")
	}
	if got := ids(x.Authorized(agentA, nil)); len(got) != 0 {
		t.Errorf("the old parent still gets %v", got)
	}
	if got := ids(x.Authorized(agentB, nil)); !slices.Equal(got, []string{"e"}) {
		t.Errorf("the new parent gets %v, want [e]", got)
	}
	if x.Len() != 1 {
		t.Errorf("Len = %d, want 1", x.Len())
	}
}

func TestChanged(t *testing.T) {
	x := entries.New(serverID, []*datastore.Entry{entry("a", "spiffe://example.org/a", agentA, "u:1")})

	ch := x.Changed()
	if isClosed(ch) {
		t.Fatal("Changed is closed before any change")
	}
	x.Put(entry("b", "spiffe://example.org/b", agentA, "u:1"))
	if !isClosed(ch) {
		t.Error("Put did not close Changed")
	}

	ch = x.Changed()
	x.Delete("nope")
	if isClosed(ch) {
		t.Error("deleting an unknown ID closed Changed")
	}
	x.Delete("a")
	if !isClosed(ch) {
		t.Error("Delete did not close Changed")
	}
	if x.Get("a") != nil || x.Len() != 1 {
		t.Errorf("after Delete: Get = %v, Len = %d; want nil, 1", x.Get("a"), x.Len())
	}
}

func TestPage(t *testing.T) {
	x := entries.New(serverID, nil)
	for _, id := range []string{"d", "b", "e", "a", "c"} {
		x.Put(entry(id, "spiffe://example.org/"+id, agentA, "u:1"))
	}
	notC := func(e *datastore.Entry) bool { return e.ID != "c" }
	for _, c := range []struct {
		name     string
		after    string
		limit    int
		keep     func(*datastore.Entry) bool
		want     []string
		wantNext string
	}{
		{"all", "", 0, nil, []string{"a", "b", "c", "d", "e"}, ""},
		{"first page", "", 2, nil, []string{"a", "b"}, "b"},
		{"second page", "b", 2, nil, []string{"c", "d"}, "d"},
		{"last page", "d", 2, nil, []string{"e"}, ""},
		{"last page exactly full", "c", 2, nil, []string{"d", "e"}, ""},
		{"after an ID not held", "bb", 2, nil, []string{"c", "d"}, "d"},
		{"after the last", "e", 2, nil, []string{}, ""},
		{"filtered", "", 0, notC, []string{"a", "b", "d", "e"}, ""},
		{"filtered page skips to fill", "a", 2, notC, []string{"b", "d"}, "d"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, next := x.Page(c.after, c.limit, c.keep)
			if !slices.Equal(ids(got), c.want) || next != c.wantNext {
				t.Errorf("Page(%q, %d) = %v, %q; want %v, %q", c.after, c.limit, ids(got), next, c.want, c.wantNext)
			}
		})
	}

	// The order follows Put and Delete.
	x.Put(entry("0", "spiffe://example.org/0", agentA, "u:1"))
	x.Delete("c")
	if got, _ := x.Page("", 0, nil); !slices.Equal(ids(got), []string{"0", "a", "b", "d", "e"}) {
		t.Errorf("Page after Put and Delete = %v", ids(got))
	}
}

// waitFor waits on Changed until cond holds, or fails after 10 s.
func waitFor(t *testing.T, x *entries.Index, what string, cond func() bool) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		ch := x.Changed()
		if cond() {
			return
		}
		select {
		case <-ch:
		case <-timeout:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// Follow applies what another server writes to the same database.
func TestFollow(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "ds.sqlite3")
	open := func() *datastore.Store {
		s, err := datastore.Open(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	mine, other := open(), open()

	existing, err := mine.CreateEntry(ctx, entry("", "spiffe://example.org/old", agentA, "u:1"))
	if err != nil {
		t.Fatal(err)
	}
	seq, err := mine.LastEntryEvent(ctx)
	if err != nil {
		t.Fatal(err)
	}
	all, err := mine.ListEntries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	x := entries.New(serverID, all)

	followCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- x.Follow(followCtx, mine, seq, 5*time.Millisecond, slog.New(slog.DiscardHandler)) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Follow: %v", err)
		}
	})

	created, err := other.CreateEntry(ctx, entry("", "spiffe://example.org/new", agentA, "u:1"))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, x, "the created entry", func() bool { return x.Get(created.ID) != nil })

	upd := *created
	upd.Hint = "updated"
	if _, err := other.UpdateEntry(ctx, &upd); err != nil {
		t.Fatal(err)
	}
	waitFor(t, x, "the updated entry", func() bool {
		e := x.Get(created.ID)
		return e != nil && e.RevisionNumber == 1 && e.Hint == "updated"
	})

	if _, err := other.DeleteEntry(ctx, existing.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, x, "the deleted entry", func() bool { return x.Get(existing.ID) == nil })
	if got := ids(x.Authorized(agentA, nil)); !slices.Equal(got, []string{created.ID}) {
		t.Errorf("Authorized after following = %v, want [%s]", got, created.ID)
	}
}
