package ca_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/plinth-id/plinth/hsm/memory"
	"github.com/plinth-id/plinth/server/ca"
	"github.com/plinth-id/plinth/server/datastore"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// storeJournal keeps the CA journal in the datastore, as plinth-server does.
type storeJournal struct{ s *datastore.Store }

func (j storeJournal) Load(ctx context.Context) ([]byte, error) {
	b, err := j.s.Get(ctx, "ca_journal")
	if errors.Is(err, datastore.ErrNotFound) {
		return nil, nil
	}
	return b, err
}

func (j storeJournal) Save(ctx context.Context, data []byte) error {
	return j.s.Put(ctx, "ca_journal", data)
}

// A CA is built over a key manager and a journal; the first New creates its
// X.509 and JWT authorities. Every SVID it signs verifies against its bundle.
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "ca-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	store, err := datastore.Open(ctx, filepath.Join(dir, "ds.sqlite3"))
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	td := spiffeid.RequireTrustDomainFromString("example.org")
	authority, err := ca.New(ctx, ca.Config{TrustDomain: td, Keys: memory.New(), Journal: storeJournal{store}})
	if err != nil {
		log.Fatal(err)
	}
	// In the server, Run rotates the authorities as they age:
	//	go authority.Run(ctx)

	// The workload's key never leaves the workload: the CA signs its public key.
	workloadKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	id := spiffeid.RequireFromPath(td, "/workload")
	chain, err := authority.SignX509SVID(ctx, ca.X509Params{ID: id, PublicKey: workloadKey.Public()})
	if err != nil {
		log.Fatal(err)
	}

	var roots []*x509.Certificate
	for _, a := range authority.Bundle().X509Authorities {
		roots = append(roots, a.Cert)
	}
	got, _, err := x509svid.Verify(chain, x509bundle.FromX509Authorities(td, roots))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(got, "verified against", len(roots), "authority")
	// Output: spiffe://example.org/workload verified against 1 authority
}
