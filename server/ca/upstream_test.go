package ca_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/plinth-id/plinth/server/ca"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// With an upstream (corporate) CA the bundle is its root, the server's CA is
// an intermediate in every chain, and it never outlives the upstream.
func TestUpstreamAuthority(t *testing.T) {
	rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Corp Root"},
		NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(12 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, rootKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := x509.ParseCertificate(der)
	authority, _, _ := newCA(t, ca.Config{Upstream: &ca.Upstream{Cert: root, Key: rootKey, Roots: []*x509.Certificate{root}}})

	b := authority.Bundle()
	if len(b.X509Authorities) != 1 || !b.X509Authorities[0].Cert.Equal(root) {
		t.Fatal("the bundle is not the upstream root")
	}
	id := spiffeid.RequireFromPath(td, "/w")
	chain, err := authority.SignX509SVID(t.Context(), ca.X509Params{ID: id, PublicKey: newKey(t).Public()})
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) != 2 {
		t.Fatalf("chain has %d certificates, want the SVID and the server's CA", len(chain))
	}
	if chain[1].NotAfter.After(root.NotAfter) {
		t.Error("the server's CA outlives the upstream CA")
	}
	raw := [][]byte{chain[0].Raw, chain[1].Raw}
	// The SVID verifies at the fake clock's time against the root alone.
	if _, _, err := x509svid.ParseAndVerify(raw, x509bundle.FromX509Authorities(td, []*x509.Certificate{root}), x509svid.WithTime(t0)); err != nil {
		t.Fatalf("SVID does not verify against the upstream root: %v", err)
	}
	// Local authorities cannot be tainted: only the root is published.
	p, err := authority.Prepare(t.Context(), ca.X509)
	if err != nil {
		t.Fatal(err)
	}
	first := authority.Authorities(t.Context(), ca.X509)[1]
	if _, err := authority.Activate(t.Context(), ca.X509, p.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := authority.Taint(t.Context(), ca.X509, first.ID); !errors.Is(err, ca.ErrPrecondition) {
		t.Fatalf("Taint with an upstream = %v, want a precondition failure", err)
	}
}
