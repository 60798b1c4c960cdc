package datastore

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"

	"github.com/plinth-id/plinth/attestors"
)

// fullEntry returns an entry with every field set.
func fullEntry() *Entry {
	return &Entry{
		ID:             "entry-1",
		SPIFFEID:       "spiffe://example.org/web",
		ParentID:       "spiffe://example.org/spire/agent/tpm/abc",
		Selectors:      sel("unix:uid:1000", "unix:gid:1000", "k8s:ns:prod"),
		X509SVIDTTL:    3600,
		JWTSVIDTTL:     300,
		DNSNames:       []string{"web.example.org", "web"},
		FederatesWith:  []string{"spiffe://other.org"},
		Admin:          true,
		Downstream:     true,
		ExpiresAt:      1_800_000_000,
		Hint:           "web",
		StoreSVID:      true,
		RevisionNumber: 42, // ignored: a new entry is revision 0
		CreatedAt:      1_600_000_000,
	}
}

func TestEntryRoundTrip(t *testing.T) {
	ctx := t.Context()
	s, _, _ := openTest(t)
	in := fullEntry()
	got, err := s.CreateEntry(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	want := fullEntry()
	want.Selectors = sel("k8s:ns:prod", "unix:gid:1000", "unix:uid:1000")
	want.RevisionNumber = 0
	if !reflect.DeepEqual(got, want) {
		t.Errorf("CreateEntry = %+v\nwant %+v", got, want)
	}
	if !reflect.DeepEqual(in, fullEntry()) {
		t.Errorf("CreateEntry modified its argument: %+v", in)
	}
	if got, err := s.GetEntry(ctx, "entry-1"); err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("GetEntry = %+v, %v\nwant %+v", got, err, want)
	}
	if got, err := s.ListEntries(ctx); err != nil || !reflect.DeepEqual(got, []*Entry{want}) {
		t.Errorf("ListEntries = %+v, %v", got, err)
	}
}

func TestCreateEntryDefaults(t *testing.T) {
	ctx := t.Context()
	s, _, _ := openTest(t)
	got, err := s.CreateEntry(ctx, &Entry{
		SPIFFEID:  "spiffe://example.org/a",
		ParentID:  "spiffe://example.org/p",
		Selectors: sel("unix:uid:1", "unix:uid:1"),
		DNSNames:  []string{},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.ID) != 36 || got.ID[14] != '4' {
		t.Errorf("ID = %q, want a version 4 UUID", got.ID)
	}
	want := &Entry{
		ID:        got.ID,
		SPIFFEID:  "spiffe://example.org/a",
		ParentID:  "spiffe://example.org/p",
		Selectors: sel("unix:uid:1"),
		CreatedAt: t0.Unix(),
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("CreateEntry = %+v, want %+v", got, want)
	}
	// Empty lists come back as nil.
	if got, err := s.GetEntry(ctx, got.ID); err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("GetEntry = %+v, %v; want %+v", got, err, want)
	}
}

func TestCreateEntryDuplicates(t *testing.T) {
	ctx := t.Context()
	s, _, _ := openTest(t)
	first, err := s.CreateEntry(ctx, &Entry{
		ID:        "first",
		SPIFFEID:  "spiffe://example.org/a",
		ParentID:  "spiffe://example.org/p",
		Selectors: sel("unix:uid:1", "unix:gid:2"),
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name    string
		e       *Entry
		wantErr string
	}{
		{
			name:    "same selectors in another order",
			e:       &Entry{SPIFFEID: "spiffe://example.org/a", ParentID: "spiffe://example.org/p", Selectors: sel("unix:gid:2", "unix:uid:1"), Hint: "other fields do not matter"},
			wantErr: `datastore: already exists: entry "first" has the same spiffe id "spiffe://example.org/a", parent id "spiffe://example.org/p" and selectors`,
		},
		{
			name:    "same selectors repeated",
			e:       &Entry{SPIFFEID: "spiffe://example.org/a", ParentID: "spiffe://example.org/p", Selectors: sel("unix:gid:2", "unix:uid:1", "unix:gid:2")},
			wantErr: `datastore: already exists: entry "first" has the same spiffe id "spiffe://example.org/a", parent id "spiffe://example.org/p" and selectors`,
		},
		{
			name:    "same id",
			e:       &Entry{ID: "first", SPIFFEID: "spiffe://example.org/b", ParentID: "spiffe://example.org/p"},
			wantErr: `datastore: already exists: entry with id "first"`,
		},
		{
			name: "fewer selectors",
			e:    &Entry{SPIFFEID: "spiffe://example.org/a", ParentID: "spiffe://example.org/p", Selectors: sel("unix:uid:1")},
		},
		{
			name: "other parent",
			e:    &Entry{SPIFFEID: "spiffe://example.org/a", ParentID: "spiffe://example.org/q", Selectors: sel("unix:uid:1", "unix:gid:2")},
		},
		{
			name: "other spiffe id",
			e:    &Entry{SPIFFEID: "spiffe://example.org/c", ParentID: "spiffe://example.org/p", Selectors: sel("unix:uid:1", "unix:gid:2")},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.CreateEntry(ctx, tt.e)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("CreateEntry: %v", err)
				}
				return
			}
			if err == nil || err.Error() != tt.wantErr {
				t.Fatalf("CreateEntry error = %v, want %q", err, tt.wantErr)
			}
			if !errors.Is(err, ErrAlreadyExists) {
				t.Errorf("error does not wrap ErrAlreadyExists")
			}
			if !reflect.DeepEqual(got, first) {
				t.Errorf("CreateEntry returned %+v, want the existing entry %+v", got, first)
			}
		})
	}
	if n, _ := s.LastEntryEvent(ctx); n != 4 {
		t.Errorf("LastEntryEvent = %d, want 4 (duplicates add no event)", n)
	}
}

func TestCreateEntries(t *testing.T) {
	ctx := t.Context()
	s, _, _ := openTest(t)
	stored, err := s.CreateEntry(ctx, &Entry{ID: "stored", SPIFFEID: "spiffe://example.org/a", ParentID: "spiffe://example.org/p", Selectors: sel("unix:uid:1")})
	if err != nil {
		t.Fatal(err)
	}
	batch := []*Entry{
		{ID: "b1", SPIFFEID: "spiffe://example.org/b", ParentID: "spiffe://example.org/p", Selectors: sel("unix:uid:1")},
		{ID: "b2", SPIFFEID: "spiffe://example.org/a", ParentID: "spiffe://example.org/p", Selectors: sel("unix:uid:1")},
		nil,
		{ID: "b4", SPIFFEID: "spiffe://example.org/b", ParentID: "spiffe://example.org/p", Selectors: sel("unix:uid:1")},
		{ID: "b5", SPIFFEID: "spiffe://example.org/c", ParentID: "spiffe://example.org/p", Selectors: sel("unix:uid:1")},
	}
	got, errs := s.CreateEntries(ctx, batch)
	wantErrs := []string{
		"",
		`datastore: already exists: entry "stored" has the same spiffe id "spiffe://example.org/a", parent id "spiffe://example.org/p" and selectors`,
		"datastore: create entry: nil entry",
		`datastore: already exists: entry "b1" has the same spiffe id "spiffe://example.org/b", parent id "spiffe://example.org/p" and selectors`,
		"",
	}
	wantIDs := []string{"b1", "stored", "", "b1", "b5"}
	for i := range batch {
		if msg := errString(errs[i]); msg != wantErrs[i] {
			t.Errorf("item %d: error %q, want %q", i, msg, wantErrs[i])
		}
		id := ""
		if got[i] != nil {
			id = got[i].ID
		}
		if id != wantIDs[i] {
			t.Errorf("item %d: entry %q, want %q", i, id, wantIDs[i])
		}
	}
	list, err := s.ListEntries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range list {
		ids = append(ids, e.ID)
	}
	if want := []string{"b1", "b5", "stored"}; !reflect.DeepEqual(ids, want) {
		t.Errorf("stored entries %v, want %v", ids, want)
	}
	if !reflect.DeepEqual(list[2], stored) {
		t.Errorf("stored entry changed: %+v", list[2])
	}
	evs, err := s.EntryEventsSince(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if want := []EntryEvent{{2, "b1"}, {3, "b5"}}; !reflect.DeepEqual(evs, want) {
		t.Errorf("events %+v, want %+v", evs, want)
	}
}

func TestCreateEntriesCanceled(t *testing.T) {
	s, _, _ := openTest(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, errs := s.CreateEntries(ctx, []*Entry{{SPIFFEID: "a"}, {SPIFFEID: "b"}})
	for i, err := range errs {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("item %d: %v, want context.Canceled", i, err)
		}
	}
	if es, _ := s.ListEntries(t.Context()); len(es) != 0 {
		t.Errorf("%d entries stored", len(es))
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestUpdateEntry(t *testing.T) {
	ctx := t.Context()
	s, clock, _ := openTest(t)
	orig, err := s.CreateEntry(ctx, fullEntry())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateEntry(ctx, &Entry{ID: "other", SPIFFEID: "spiffe://example.org/other", ParentID: "spiffe://example.org/p", Selectors: sel("unix:uid:9")}); err != nil {
		t.Fatal(err)
	}
	clock.advance(1000)

	upd := &Entry{
		ID:            orig.ID,
		SPIFFEID:      "spiffe://example.org/web2",
		ParentID:      "spiffe://example.org/p2",
		Selectors:     sel("unix:uid:2", "docker:label:a:b"),
		X509SVIDTTL:   60,
		DNSNames:      []string{"x"},
		Hint:          "h",
		CreatedAt:     5, // ignored
		ExpiresAt:     7,
		StoreSVID:     false,
		FederatesWith: nil,
	}
	got, err := s.UpdateEntry(ctx, upd)
	if err != nil {
		t.Fatal(err)
	}
	want := &Entry{
		ID:             orig.ID,
		SPIFFEID:       "spiffe://example.org/web2",
		ParentID:       "spiffe://example.org/p2",
		Selectors:      sel("docker:label:a:b", "unix:uid:2"),
		X509SVIDTTL:    60,
		DNSNames:       []string{"x"},
		Hint:           "h",
		ExpiresAt:      7,
		RevisionNumber: 1,
		CreatedAt:      orig.CreatedAt,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("UpdateEntry = %+v\nwant %+v", got, want)
	}
	if got, err := s.GetEntry(ctx, orig.ID); err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("GetEntry = %+v, %v\nwant %+v", got, err, want)
	}
	// Updating an entry to what it already is is not a collision with itself.
	if got, err := s.UpdateEntry(ctx, want); err != nil || got.RevisionNumber != 2 {
		t.Errorf("second UpdateEntry = %+v, %v; want revision 2", got, err)
	}

	for _, tt := range []struct {
		name    string
		e       *Entry
		wantErr error
		msg     string
	}{
		{
			name:    "collision",
			e:       &Entry{ID: orig.ID, SPIFFEID: "spiffe://example.org/other", ParentID: "spiffe://example.org/p", Selectors: sel("unix:uid:9")},
			wantErr: ErrAlreadyExists,
			msg:     `datastore: already exists: entry "other" has the same spiffe id "spiffe://example.org/other", parent id "spiffe://example.org/p" and selectors`,
		},
		{
			name:    "unknown",
			e:       &Entry{ID: "nope", SPIFFEID: "spiffe://example.org/x"},
			wantErr: ErrNotFound,
			msg:     `datastore: not found: entry "nope"`,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.UpdateEntry(ctx, tt.e)
			if !errors.Is(err, tt.wantErr) || err.Error() != tt.msg {
				t.Fatalf("UpdateEntry = %v, want %q", err, tt.msg)
			}
		})
	}
	if got, _ := s.GetEntry(ctx, orig.ID); got.RevisionNumber != 2 {
		t.Errorf("failed update changed the entry: %+v", got)
	}
}

func TestDeleteEntry(t *testing.T) {
	ctx := t.Context()
	s, _, _ := openTest(t)
	e, err := s.CreateEntry(ctx, fullEntry())
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.DeleteEntry(ctx, e.ID)
	if err != nil || !reflect.DeepEqual(got, e) {
		t.Fatalf("DeleteEntry = %+v, %v; want %+v", got, err, e)
	}
	want := `datastore: not found: entry "entry-1"`
	if _, err := s.DeleteEntry(ctx, e.ID); !errors.Is(err, ErrNotFound) || err.Error() != want {
		t.Errorf("second DeleteEntry = %v, want %q", err, want)
	}
	if _, err := s.GetEntry(ctx, e.ID); !errors.Is(err, ErrNotFound) || err.Error() != want {
		t.Errorf("GetEntry after delete = %v, want %q", err, want)
	}
	// The same identity can be created again.
	if _, err := s.CreateEntry(ctx, fullEntry()); err != nil {
		t.Errorf("CreateEntry after delete: %v", err)
	}
}

func TestEntryEvents(t *testing.T) {
	ctx := t.Context()
	s, _, _ := openTest(t)
	if n, err := s.LastEntryEvent(ctx); err != nil || n != 0 {
		t.Fatalf("LastEntryEvent on empty store = %d, %v", n, err)
	}
	a, err := s.CreateEntry(ctx, &Entry{ID: "a", SPIFFEID: "spiffe://example.org/a", ParentID: "spiffe://example.org/p"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateEntry(ctx, &Entry{ID: "b", SPIFFEID: "spiffe://example.org/b", ParentID: "spiffe://example.org/p"}); err != nil {
		t.Fatal(err)
	}
	a.Hint = "changed"
	if _, err := s.UpdateEntry(ctx, a); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteEntry(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	// Failures add no event.
	s.DeleteEntry(ctx, "b")
	s.UpdateEntry(ctx, &Entry{ID: "b"})
	s.CreateEntry(ctx, &Entry{ID: "a"})

	all := []EntryEvent{{1, "a"}, {2, "b"}, {3, "a"}, {4, "b"}}
	for _, tt := range []struct {
		since int64
		want  []EntryEvent
	}{
		{0, all},
		{2, all[2:]},
		{3, all[3:]},
		{4, nil},
		{100, nil},
	} {
		t.Run(fmt.Sprint(tt.since), func(t *testing.T) {
			got, err := s.EntryEventsSince(ctx, tt.since)
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("EntryEventsSince(%d) = %+v, %v; want %+v", tt.since, got, err, tt.want)
			}
		})
	}
	if n, err := s.LastEntryEvent(ctx); err != nil || n != 4 {
		t.Errorf("LastEntryEvent = %d, %v; want 4", n, err)
	}
}

// TestConcurrentCreates creates entries from 8 goroutines while others
// read; no call may fail, in particular not with "database is locked".
func TestConcurrentCreates(t *testing.T) {
	ctx := t.Context()
	s, _, _ := openTest(t)
	const writers, perWriter = 8, 50
	var wg sync.WaitGroup
	errs := make(chan error, writers*perWriter+100)
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				_, err := s.CreateEntry(ctx, &Entry{
					SPIFFEID:  fmt.Sprintf("spiffe://example.org/w%d/%d", w, i),
					ParentID:  "spiffe://example.org/p",
					Selectors: []attestors.Selector{{Type: "unix", Value: fmt.Sprintf("uid:%d", i)}},
				})
				if err != nil {
					errs <- err
				}
			}
		})
	}
	for range 2 {
		wg.Go(func() {
			for range 20 {
				if _, err := s.ListEntries(ctx); err != nil {
					errs <- err
				}
				if _, err := s.EntryEventsSince(ctx, 0); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	es, err := s.ListEntries(ctx)
	if err != nil || len(es) != writers*perWriter {
		t.Fatalf("ListEntries: %d entries, %v; want %d", len(es), err, writers*perWriter)
	}
	evs, err := s.EntryEventsSince(ctx, 0)
	if err != nil || len(evs) != writers*perWriter {
		t.Fatalf("EntryEventsSince: %d events, %v", len(evs), err)
	}
	for i, ev := range evs {
		if ev.Seq != int64(i+1) {
			t.Fatalf("event %d has seq %d", i, ev.Seq)
		}
	}
}

// TestTwoStoresOneFile writes through two Stores on one file, as two
// processes would: they wait on each other's locks rather than fail.
func TestTwoStoresOneFile(t *testing.T) {
	ctx := t.Context()
	s1, _, path := openTest(t)
	s2, _ := openAt(t, path)
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i, s := range []*Store{s1, s2, s1, s2} {
		wg.Go(func() {
			for j := range 25 {
				if _, err := s.CreateEntry(ctx, &Entry{SPIFFEID: fmt.Sprintf("spiffe://example.org/%d/%d", i, j)}); err != nil {
					errs <- err
				}
				if err := s.Put(ctx, "k", []byte{byte(j)}); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n, err := s2.LastEntryEvent(ctx); err != nil || n != 100 {
		t.Errorf("LastEntryEvent = %d, %v; want 100", n, err)
	}
}
