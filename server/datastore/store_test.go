package datastore

import (
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/plinth-id/plinth/attestors"
)

// t0 is the time of the fake clock tests start with.
var t0 = time.Unix(1_700_000_000, 0)

// fakeClock is a settable clock for Store.now.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

// openTest opens a store in a fresh directory, with a fake clock at t0.
func openTest(t testing.TB) (*Store, *fakeClock, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "datastore.sqlite3")
	s, clock := openAt(t, path)
	return s, clock, path
}

func openAt(t testing.TB, path string) (*Store, *fakeClock) {
	t.Helper()
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	clock := &fakeClock{t: t0}
	s.now = clock.now
	return s, clock
}

func sel(ss ...string) []attestors.Selector {
	var out []attestors.Selector
	for _, s := range ss {
		p, err := attestors.ParseSelector(s)
		if err != nil {
			panic(err)
		}
		out = append(out, p)
	}
	return out
}

func TestOpenCreatesPrivateFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	path := filepath.Join(dir, "datastore.sqlite3")
	s, _ := openAt(t, path)
	if err := s.Put(t.Context(), "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path string
		mode os.FileMode
	}{
		{dir, 0o700 | os.ModeDir},
		{path, 0o600},
		{path + "-wal", 0o600},
	} {
		fi, err := os.Stat(c.path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != c.mode {
			t.Errorf("%s: mode %v, want %v", c.path, fi.Mode(), c.mode)
		}
	}
}

func TestOpenPathWithURICharacters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "odd dir?#%", "data store.db")
	s, _ := openAt(t, path)
	if err := s.Put(t.Context(), "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("database not at the path given: %v", err)
	}
}

func TestOpenEmptyPath(t *testing.T) {
	_, err := Open(t.Context(), "")
	if err == nil || err.Error() != "datastore: empty database path" {
		t.Fatalf("Open(\"\") = %v", err)
	}
}

func schemaVersions(t *testing.T, path string) []int {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT version FROM schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var vs []int
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		vs = append(vs, v)
	}
	return vs
}

func TestMigrateIsIdempotent(t *testing.T) {
	s, _, path := openTest(t)
	// Migrating a current database again changes nothing.
	if err := migrate(t.Context(), s.w); err != nil {
		t.Fatalf("migrate again: %v", err)
	}
	s.Close()
	for range 2 {
		s, err := Open(t.Context(), path)
		if err != nil {
			t.Fatalf("reopen: %v", err)
		}
		s.Close()
	}
	var want []int
	for i := range migrations {
		want = append(want, i+1)
	}
	if got := schemaVersions(t, path); !reflect.DeepEqual(got, want) {
		t.Errorf("schema_migrations = %v, want %v", got, want)
	}
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	s, _, path := openTest(t)
	s.Close()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO schema_migrations (version) VALUES (?)`, len(migrations)+7); err != nil {
		t.Fatal(err)
	}
	db.Close()

	_, err = Open(t.Context(), path)
	want := fmt.Sprintf("datastore: database schema version %d is newer than this server supports (%d); upgrade plinth-server",
		len(migrations)+7, len(migrations))
	if err == nil || err.Error() != want {
		t.Fatalf("Open = %v, want %q", err, want)
	}
}

// TestReopenKeepsEverything writes one of everything, closes the store and
// checks that a new Store on the same file reads it all back.
func TestReopenKeepsEverything(t *testing.T) {
	ctx := t.Context()
	s, _, path := openTest(t)

	e, err := s.CreateEntry(ctx, fullEntry())
	if err != nil {
		t.Fatal(err)
	}
	a := fullAgent()
	if err := s.SetAgent(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateJoinToken(ctx, &JoinToken{Token: "secret", ExpiresAt: t0.Unix() + 600, AgentAlias: "spiffe://example.org/alias"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "ca/journal", []byte{0, 1, 2}); err != nil {
		t.Fatal(err)
	}
	audit := &AuditRecord{Time: 5, Kind: "attest", Subject: "spiffe://example.org/spire/agent/tpm/abc", Decision: "allow", Reason: "ok", Details: map[string]string{"pcr": "7"}}
	if err := s.AppendAudit(ctx, audit); err != nil {
		t.Fatal(err)
	}
	agentBefore, err := s.GetAgent(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s, _ = openAt(t, path)
	if got, err := s.ListEntries(ctx); err != nil || !reflect.DeepEqual(got, []*Entry{e}) {
		t.Errorf("ListEntries after reopen = %+v, %v; want %+v", got, err, e)
	}
	if got, err := s.EntryEventsSince(ctx, 0); err != nil || !reflect.DeepEqual(got, []EntryEvent{{1, e.ID}}) {
		t.Errorf("EntryEventsSince after reopen = %+v, %v", got, err)
	}
	if got, err := s.ListAgents(ctx); err != nil || !reflect.DeepEqual(got, []*Agent{agentBefore}) {
		t.Errorf("ListAgents after reopen = %+v, %v; want %+v", got, err, agentBefore)
	}
	if got, err := s.Get(ctx, "ca/journal"); err != nil || !reflect.DeepEqual(got, []byte{0, 1, 2}) {
		t.Errorf("Get after reopen = %v, %v", got, err)
	}
	if got, err := s.ListAudit(ctx, "", 0); err != nil || !reflect.DeepEqual(got, []*AuditRecord{audit}) {
		t.Errorf("ListAudit after reopen = %+v, %v", got, err)
	}
	if got, err := s.ConsumeJoinToken(ctx, "secret", t0); err != nil || got.AgentAlias != "spiffe://example.org/alias" {
		t.Errorf("ConsumeJoinToken after reopen = %+v, %v", got, err)
	}
	// Sequence numbers continue where they were.
	e2, err := s.CreateEntry(ctx, &Entry{SPIFFEID: "spiffe://example.org/two", ParentID: "spiffe://example.org/p", Selectors: sel("unix:uid:2")})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.EntryEventsSince(ctx, 1); err != nil || !reflect.DeepEqual(got, []EntryEvent{{2, e2.ID}}) {
		t.Errorf("EntryEventsSince(1) = %+v, %v", got, err)
	}
}
