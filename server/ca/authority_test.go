package ca_test

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"io"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plinth-id/plinth/hsm"
	"github.com/plinth-id/plinth/hsm/memory"
	"github.com/plinth-id/plinth/server/ca"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// The operator's forced rotation: prepare, activate, taint, revoke.
func TestForcedRotation(t *testing.T) {
	ctx := t.Context()
	keys := memory.New()
	authority, _, _ := newCA(t, ca.Config{Keys: keys})
	id := spiffeid.RequireFromPath(td, "/w")
	signer := func() *x509.Certificate {
		chain, err := authority.SignX509SVID(ctx, ca.X509Params{ID: id, PublicKey: newKey(t).Public()})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range authority.Bundle().X509Authorities {
			if chain[0].CheckSignatureFrom(a.Cert) == nil {
				return a.Cert
			}
		}
		t.Fatal("the SVID chains to no authority in the bundle")
		return nil
	}
	first := authority.Authorities(ctx, ca.X509)
	if len(first) != 1 || first[0].Status != ca.Active || first[0].ID == "" {
		t.Fatalf("initial authorities = %+v", first)
	}
	oldID, oldCert := first[0].ID, signer()
	if oldID != hex.EncodeToString(oldCert.SubjectKeyId) {
		t.Fatalf("authority ID %s is not the SKID of its certificate", oldID)
	}

	wantErr := func(err error, want string) {
		t.Helper()
		if !errors.Is(err, ca.ErrPrecondition) || !strings.Contains(err.Error(), want) {
			t.Fatalf("error = %v, want a precondition failure containing %q", err, want)
		}
	}
	_, err := authority.Activate(ctx, ca.X509, "")
	wantErr(err, "no x509 authority is prepared; prepare one first")
	_, err = authority.Taint(ctx, ca.X509, oldID)
	wantErr(err, "is active; only an old authority can be tainted or revoked")

	prepared, err := authority.Prepare(ctx, ca.X509)
	if err != nil {
		t.Fatal(err)
	}
	if len(authority.Bundle().X509Authorities) != 2 {
		t.Fatal("the prepared authority is not in the bundle")
	}
	if !signer().Equal(oldCert) {
		t.Fatal("the prepared authority signs before it is activated")
	}
	_, err = authority.Prepare(ctx, ca.X509)
	wantErr(err, "is already prepared; activate it first")
	_, err = authority.Activate(ctx, ca.X509, "deadbeef")
	wantErr(err, "x509 authority deadbeef is not the prepared one")

	if _, err := authority.Activate(ctx, ca.X509, prepared.ID); err != nil {
		t.Fatal(err)
	}
	if signer().Equal(oldCert) {
		t.Fatal("the activated authority does not sign")
	}
	_, err = authority.Revoke(ctx, ca.X509, oldID)
	wantErr(err, "is not tainted; taint it first")

	if _, err := authority.Taint(ctx, ca.X509, oldID); err != nil {
		t.Fatal(err)
	}
	tainted := 0
	for _, a := range authority.Bundle().X509Authorities {
		if a.Tainted {
			tainted++
			if !a.Cert.Equal(oldCert) {
				t.Fatal("the wrong authority is tainted")
			}
		}
	}
	if tainted != 1 {
		t.Fatalf("%d tainted authorities in the bundle, want 1", tainted)
	}
	if _, err := authority.Revoke(ctx, ca.X509, oldID); err != nil {
		t.Fatal(err)
	}
	for _, a := range authority.Bundle().X509Authorities {
		if a.Cert.Equal(oldCert) {
			t.Fatal("the revoked authority is still in the bundle")
		}
	}
	_, err = authority.Revoke(ctx, ca.X509, oldID)
	wantErr(err, "no x509 authority "+oldID)

	// JWT authorities follow the same steps, by key ID.
	p, err := authority.Prepare(ctx, ca.JWT)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := authority.Activate(ctx, ca.JWT, p.ID); err != nil {
		t.Fatal(err)
	}
	states := authority.Authorities(ctx, ca.JWT)
	if len(states) != 2 || states[0].Status != ca.Active || states[1].Status != ca.Old {
		t.Fatalf("JWT authorities = %+v", states)
	}
	if _, err := authority.Taint(ctx, ca.JWT, states[1].ID); err != nil {
		t.Fatal(err)
	}
}

// A prepare whose journal cannot be saved deletes the key it made.
func TestFailedPrepareLeavesNoKey(t *testing.T) {
	ctx := t.Context()
	keys := memory.New()
	authority, _, j := newCA(t, ca.Config{Keys: keys})
	j.saveErr = errors.New("datastore down")
	if _, err := authority.Prepare(ctx, ca.X509); err == nil || !strings.Contains(err.Error(), "datastore down") {
		t.Fatalf("Prepare = %v, want the save error", err)
	}
	if _, err := keys.GetKey(ctx, "x509-ca-B"); !errors.Is(err, hsm.ErrNotFound) {
		t.Fatalf("the key of the failed prepare is still there: %v", err)
	}
	if n := len(authority.Bundle().X509Authorities); n != 1 {
		t.Fatalf("bundle has %d authorities after a failed prepare, want 1", n)
	}
	j.saveErr = nil
	if _, err := authority.Prepare(ctx, ca.X509); err != nil {
		t.Fatalf("Prepare after the datastore came back: %v", err)
	}
}

// flakyKeys fails every signature while down is set.
type flakyKeys struct {
	hsm.KeyManager
	down *atomic.Bool
}

type flakyKey struct {
	hsm.Key
	down *atomic.Bool
}

func (k flakyKey) Sign(r io.Reader, d []byte, o crypto.SignerOpts) ([]byte, error) {
	if k.down.Load() {
		return nil, errors.New("token not present")
	}
	return k.Key.Sign(r, d, o)
}

func (m flakyKeys) GenerateKey(ctx context.Context, id string, t hsm.KeyType) (hsm.Key, error) {
	k, err := m.KeyManager.GenerateKey(ctx, id, t)
	return flakyKey{k, m.down}, err
}

func (m flakyKeys) GetKey(ctx context.Context, id string) (hsm.Key, error) {
	k, err := m.KeyManager.GetKey(ctx, id)
	if err != nil {
		return nil, err
	}
	return flakyKey{k, m.down}, nil
}

// An HSM that goes away makes the CA unhealthy, not dead; when it comes
// back, signing and health recover with no restart.
func TestHealthFollowsTheHSM(t *testing.T) {
	ctx := t.Context()
	down := &atomic.Bool{}
	authority, _, _ := newCA(t, ca.Config{Keys: flakyKeys{memory.New(), down}, ProbeInterval: time.Millisecond})
	if err := authority.Healthy(); err != nil {
		t.Fatalf("healthy CA reports %v", err)
	}
	down.Store(true)
	id := spiffeid.RequireFromPath(td, "/w")
	if _, err := authority.SignX509SVID(ctx, ca.X509Params{ID: id, PublicKey: newKey(t).Public()}); err == nil {
		t.Fatal("signing worked with the HSM gone")
	}
	if err := authority.Healthy(); err == nil || !strings.Contains(err.Error(), "token not present") {
		t.Fatalf("Healthy with the HSM gone = %v", err)
	}
	down.Store(false)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { authority.Run(runCtx); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for authority.Healthy() != nil && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	stop()
	<-done
	if err := authority.Healthy(); err != nil {
		t.Fatalf("the CA did not recover: %v", err)
	}
	if _, err := authority.SignX509SVID(ctx, ca.X509Params{ID: id, PublicKey: newKey(t).Public()}); err != nil {
		t.Fatal(err)
	}
}

// A server that stops between prepare and activate resumes with the same
// prepared authority and key: nothing leaked, nothing lost.
func TestRestartBetweenPrepareAndActivate(t *testing.T) {
	ctx := t.Context()
	keys := memory.New()
	authority, clk, j := newCA(t, ca.Config{Keys: keys})
	p, err := authority.Prepare(ctx, ca.X509)
	if err != nil {
		t.Fatal(err)
	}
	// "Restart": a new CA over the same journal and key manager.
	again, err := ca.New(ctx, ca.Config{TrustDomain: td, Keys: keys, Journal: j, Clock: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	states := again.Authorities(ctx, ca.X509)
	if len(states) != 2 || states[0].Status != ca.Prepared || states[0].ID != p.ID {
		t.Fatalf("after restart: %+v, want the prepared authority %s", states, p.ID)
	}
	if _, err := again.Activate(ctx, ca.X509, p.ID); err != nil {
		t.Fatal(err)
	}
	all, _ := keys.ListKeys(ctx)
	var ids []string
	for _, k := range all {
		ids = append(ids, k.ID())
	}
	if want := []string{"jwt-signer-A", "x509-ca-A", "x509-ca-B"}; !slices.Equal(ids, want) {
		t.Fatalf("keys after restart and activate: %v, want %v (nothing leaked)", ids, want)
	}
}
