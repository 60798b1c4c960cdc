package datastore_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/plinth-id/plinth/attestors"
	"github.com/plinth-id/plinth/server/datastore"
)

func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "plinth")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	s, err := datastore.Open(ctx, filepath.Join(dir, "datastore.sqlite3"))
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()

	e := &datastore.Entry{
		SPIFFEID: "spiffe://example.org/web",
		ParentID: "spiffe://example.org/spire/agent/tpm/abc",
		Selectors: []attestors.Selector{
			{Type: "unix", Value: "uid:1000"},
			{Type: "k8s", Value: "ns:prod"},
		},
	}
	created, err := s.CreateEntry(ctx, e)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("created", created.SPIFFEID, "with selectors", created.Selectors)

	// The same SPIFFE ID, parent and selector set is a duplicate.
	_, err = s.CreateEntry(ctx, e)
	fmt.Println("again:", errors.Is(err, datastore.ErrAlreadyExists))

	// A cache catches up by reading the events after the last one it saw.
	events, err := s.EntryEventsSince(ctx, 0)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("events:", len(events), events[0].EntryID == created.ID)
	// Output:
	// created spiffe://example.org/web with selectors [k8s:ns:prod unix:uid:1000]
	// again: true
	// events: 1 true
}

func ExampleStore_ConsumeJoinToken() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "plinth")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	s, err := datastore.Open(ctx, filepath.Join(dir, "datastore.sqlite3"))
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()

	now := time.Unix(1_700_000_000, 0)
	t := &datastore.JoinToken{Token: "3f1c0b6e-7a52-4a8e-9d0e-2b8f4d7c1a90", ExpiresAt: now.Add(10 * time.Minute).Unix()}
	if err := s.CreateJoinToken(ctx, t); err != nil {
		log.Fatal(err)
	}
	_, err = s.ConsumeJoinToken(ctx, t.Token, now)
	fmt.Println("first use:", err)
	_, err = s.ConsumeJoinToken(ctx, t.Token, now)
	fmt.Println("second use:", err)
	// Output:
	// first use: <nil>
	// second use: datastore: not found: join token
}
