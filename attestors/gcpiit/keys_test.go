package gcpiit_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plinth-id/plinth/attestors"
	"github.com/plinth-id/plinth/attestors/gcpiit"
	"github.com/plinth-id/plinth/simulator"
)

// keyServer is a server that downloads sim's keys from its JWKS URL, with a
// clock the test moves (the simulator issues its tokens at the same time).
type keyServer struct {
	sim   *simulator.GCPMetadata
	s     *gcpiit.Server
	mu    sync.Mutex
	clock time.Time
}

func newKeyServer(t *testing.T) *keyServer {
	k := &keyServer{sim: newSim(t), clock: now}
	k.sim.SetClock(k.now)
	keys, err := gcpiit.NewHTTPKeys(gcpiit.HTTPKeysConfig{URL: k.sim.JWKSURL(), Clock: k.now, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	k.s, _ = newServer(t, k.sim, func(c *gcpiit.ServerConfig) {
		c.Keys, c.Clock, c.AllowReattestation = keys, k.now, true
	})
	return k
}

func (k *keyServer) now() time.Time {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.clock
}

func (k *keyServer) advance(d time.Duration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.clock = k.clock.Add(d)
}

func (k *keyServer) attest(t *testing.T, sim *simulator.GCPMetadata) error {
	t.Helper()
	tok, err := sim.Token(gcpiit.DefaultAudience)
	if err != nil {
		t.Fatal(err)
	}
	_, err = k.s.Attest(t.Context(), payload(t, tok), noChallenge)
	return err
}

func (k *keyServer) downloads() int {
	_, n := k.sim.Requests()
	return n
}

func TestKeysAreDownloadedOnceAndCached(t *testing.T) {
	k := newKeyServer(t)
	for range 3 {
		if err := k.attest(t, k.sim); err != nil {
			t.Fatal(err)
		}
	}
	if n := k.downloads(); n != 1 {
		t.Fatalf("%d downloads, want 1", n)
	}
	// The simulator says max-age=3600: an hour later the keys are downloaded
	// again.
	k.advance(59 * time.Minute)
	k.attest(t, k.sim)
	if n := k.downloads(); n != 1 {
		t.Fatalf("%d downloads after 59 min, want 1", n)
	}
	k.advance(2 * time.Minute)
	if err := k.attest(t, k.sim); err != nil {
		t.Fatal(err)
	}
	if n := k.downloads(); n != 2 {
		t.Fatalf("%d downloads after 61 min, want 2", n)
	}
}

func TestUnknownKeyIDRefreshesOnce(t *testing.T) {
	k := newKeyServer(t)
	if err := k.attest(t, k.sim); err != nil {
		t.Fatal(err)
	}
	// Google publishes a new key and signs with it: the first token that
	// names it makes the server download the keys again, once, even when
	// many arrive together.
	k.advance(2 * time.Minute)
	if err := k.sim.RotateKey(); err != nil {
		t.Fatal(err)
	}
	tok, err := k.sim.Token(gcpiit.DefaultAudience)
	if err != nil {
		t.Fatal(err)
	}
	p := payload(t, tok)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() { _, errs[i] = k.s.Attest(t.Context(), p, noChallenge) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if n := k.downloads(); n != 2 {
		t.Fatalf("%d downloads, want 2", n)
	}

	// A key nobody published: one download, then a rejection; within the
	// minute no further download, whatever the tokens say.
	other := newSim(t)
	want := fmt.Sprintf("attestation rejected: identity token is signed by key %q, which is not a trusted key", other.KeyID())
	k.advance(2 * time.Minute)
	for i := range 5 {
		if err := k.attest(t, other); err == nil || err.Error() != want {
			t.Fatalf("attempt %d: Attest = %v, want %q", i, err, want)
		}
	}
	if n := k.downloads(); n != 3 {
		t.Fatalf("%d downloads, want 3", n)
	}
	k.advance(time.Minute)
	k.attest(t, other)
	if n := k.downloads(); n != 4 {
		t.Fatalf("%d downloads a minute later, want 4", n)
	}
}

func TestStaleKeysWhileDownloadsFail(t *testing.T) {
	k := newKeyServer(t)
	if err := k.attest(t, k.sim); err != nil {
		t.Fatal(err)
	}
	k.sim.Close() // the key endpoint goes away; the simulator still mints tokens
	k.advance(2 * time.Hour)
	if err := k.attest(t, k.sim); err != nil {
		t.Fatalf("Attest with stale keys = %v", err)
	}
	// A key ID the stale keys lack may be a new key: the server's failure,
	// not a rejection.
	other := newSim(t)
	k.advance(2 * time.Minute)
	err := k.attest(t, other)
	prefix := fmt.Sprintf("gcpiit: could not get signing key %q: jwks: key ID %[1]q is not among the keys cached from %s, which could not be downloaded again: ",
		other.KeyID(), k.sim.JWKSURL())
	if err == nil || errors.Is(err, attestors.ErrRejected) || !strings.HasPrefix(err.Error(), prefix) {
		t.Fatalf("Attest = %v\nwant an internal error starting %q", err, prefix)
	}
	k.advance(24 * time.Hour)
	err = k.attest(t, k.sim)
	prefix = fmt.Sprintf("gcpiit: could not get signing key %q: jwks: keys from %s expired at 2026-11-03T11:00:00Z and could not be downloaded again: ",
		k.sim.KeyID(), k.sim.JWKSURL())
	if err == nil || errors.Is(err, attestors.ErrRejected) || !strings.HasPrefix(err.Error(), prefix) {
		t.Fatalf("Attest = %v\nwant an internal error starting %q", err, prefix)
	}
}

func TestKeySources(t *testing.T) {
	sim := newSim(t)
	static, err := gcpiit.ParseJWKS(sim.JWKS())
	if err != nil {
		t.Fatal(err)
	}
	down, err := gcpiit.NewHTTPKeys(gcpiit.HTTPKeysConfig{URL: "http://127.0.0.1:1/certs", Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ks := gcpiit.KeySources{down, static}
	// A source that fails does not hide a key another has.
	if _, err := ks.Key(t.Context(), sim.KeyID()); err != nil {
		t.Fatal(err)
	}
	// When no source has it, the failure is reported, not "unknown".
	_, err = ks.Key(t.Context(), "nope")
	if err == nil || errors.Is(err, gcpiit.ErrUnknownKey) || !strings.HasPrefix(err.Error(), "jwks: no keys from http://127.0.0.1:1/certs: ") {
		t.Fatalf("Key = %v", err)
	}
	_, err = gcpiit.KeySources{static}.Key(context.Background(), "nope")
	if !errors.Is(err, gcpiit.ErrUnknownKey) || err.Error() != `key ID "nope": no trusted key has this key ID` {
		t.Fatalf("Key = %v", err)
	}
}

func TestNewHTTPKeysValidates(t *testing.T) {
	for _, tt := range []struct{ url, want string }{
		{"", "jwks: a key set URL is required"},
		{"ftp://keys.example/certs", `jwks: key set URL "ftp://keys.example/certs" is not an http(s) URL`},
		{"www.googleapis.com/oauth2/v3/certs", `jwks: key set URL "www.googleapis.com/oauth2/v3/certs" is not an http(s) URL`},
		{"http://www.googleapis.com/oauth2/v3/certs", `jwks: key set URL "http://www.googleapis.com/oauth2/v3/certs" is plain http; keys are downloaded over https only (http only from a loopback address, for tests)`},
		{"http://10.0.0.1/certs", `jwks: key set URL "http://10.0.0.1/certs" is plain http; keys are downloaded over https only (http only from a loopback address, for tests)`},
		{"https://www.googleapis.com/oauth2/v3/certs", ""},
		{"http://127.0.0.1:8080/certs", ""},
		{"http://[::1]:8080/certs", ""},
		{"http://localhost/certs", ""},
	} {
		_, err := gcpiit.NewHTTPKeys(gcpiit.HTTPKeysConfig{URL: tt.url})
		if got := fmt.Sprint(err); (tt.want == "" && err != nil) || (tt.want != "" && got != tt.want) {
			t.Errorf("NewHTTPKeys(%q) = %v, want %q", tt.url, err, tt.want)
		}
	}
}
