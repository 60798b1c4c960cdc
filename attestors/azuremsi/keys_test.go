package azuremsi_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/plinth-id/plinth/attestors/azuremsi"
)

// The tenant's keys are downloaded from its keys URL, cached, and downloaded
// again once for a key ID the cache lacks.
func TestTenantKeysAreDownloaded(t *testing.T) {
	sim := newSim(t, ident)
	var mu sync.Mutex
	clock := now
	tick := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	sim.SetClock(tick)
	s, _ := newServer(t, sim, func(c *azuremsi.ServerConfig) {
		c.Tenants = map[string]azuremsi.TenantConfig{tenant: {KeysURL: sim.KeysURL()}}
		c.Clock, c.AllowReattestation = tick, true
	})
	attest := func() error {
		tok, err := sim.Token(azuremsi.DefaultResource)
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.Attest(t.Context(), payload(t, tok), noChallenge)
		return err
	}
	downloads := func() int { _, n := sim.Requests(); return n }
	for range 3 {
		if err := attest(); err != nil {
			t.Fatal(err)
		}
	}
	if n := downloads(); n != 1 {
		t.Fatalf("%d downloads, want 1", n)
	}
	mu.Lock()
	clock = clock.Add(2 * time.Minute)
	mu.Unlock()
	if err := sim.RotateKey(); err != nil {
		t.Fatal(err)
	}
	if err := attest(); err != nil {
		t.Fatal(err)
	}
	if n := downloads(); n != 2 {
		t.Fatalf("%d downloads after a rotation, want 2", n)
	}
	// A key ID nobody published: refused, and no download within the minute.
	other := newSim(t, ident)
	tok, _ := other.Token(azuremsi.DefaultResource)
	_, err := s.Attest(t.Context(), payload(t, tok), noChallenge)
	want := fmt.Sprintf("attestation rejected: token is signed by key %q, which is not a key of tenant %s", other.KeyID(), tenant)
	if err == nil || err.Error() != want {
		t.Fatalf("Attest = %v\nwant %s", err, want)
	}
	if n := downloads(); n != 2 {
		t.Fatalf("%d downloads, want 2", n)
	}
}
