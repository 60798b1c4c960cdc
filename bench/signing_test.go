package bench

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/plinth-id/plinth/hsm"
	"github.com/plinth-id/plinth/hsm/awskms"
	"github.com/plinth-id/plinth/hsm/awskms/kmstest"
	"github.com/plinth-id/plinth/hsm/memory"
	"github.com/plinth-id/plinth/server/ca"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

type mapJournal struct{ data []byte }

func (j *mapJournal) Load(context.Context) ([]byte, error)   { return j.data, nil }
func (j *mapJournal) Save(_ context.Context, d []byte) error { j.data = d; return nil }

// BenchmarkSigning compares the CA's X509-SVID signing path, through the
// hsm contract, with x509.CreateCertificate over a plain *ecdsa.PrivateKey
// in the same run, for each key backend; and times a forced rotation
// (prepare + activate) on each. Targets: memory >= 0.9x raw (the signing
// path adds nothing); the others are reported (an HSM or KMS signs slower
// than memory by nature; see BenchmarkPKCS11 for its own target).
func BenchmarkSigning(b *testing.B) {
	ctx := context.Background()
	td := spiffeid.RequireTrustDomainFromString("example.org")
	id := spiffeid.RequireFromPath(td, "/workload")
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)

	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "raw"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	caCert, _ := x509.ParseCertificate(caDER)
	// The same certificate the CA issues, signed directly with a plain
	// crypto/ecdsa key: the ratio isolates what the CA and hsm layers add.
	raw := func() {
		serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
		tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{Country: []string{"US"}, Organization: []string{"SPIRE"}},
			NotBefore: time.Now().Add(-10 * time.Second), NotAfter: time.Now().Add(time.Hour), URIs: []*url.URL{id.URL()},
			BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageKeyAgreement,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, leafKey.Public(), caKey)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := x509.ParseCertificate(der); err != nil {
			b.Fatal(err)
		}
	}
	rate := func(n int, f func()) float64 {
		start := time.Now()
		for range n {
			f()
		}
		return float64(n) / time.Since(start).Seconds()
	}

	kms := kmstest.New()
	defer kms.Close()
	kmsKeys, err := awskms.New(ctx, awskms.Config{Region: kmstest.Region, Endpoint: kms.URL, AliasPrefix: "alias/plinth/bench/", ServerID: "bench", Credentials: kmstest.Credentials()})
	if err != nil {
		b.Fatal(err)
	}
	backends := []struct {
		name   string
		keys   hsm.KeyManager
		n      int
		target float64
	}{
		{"memory", memory.New(), 3000, 0.9},
		{"fake KMS (HTTP per signature)", kmsKeys, 300, 0},
	}
	backends = append(backends, extraBackends(b)...)
	for _, be := range backends {
		authority, err := ca.New(ctx, ca.Config{TrustDomain: td, Keys: be.keys, Journal: &mapJournal{}})
		if err != nil {
			b.Fatal(err)
		}
		plinth := func() {
			if _, err := authority.SignX509SVID(ctx, ca.X509Params{ID: id, PublicKey: leafKey.Public()}); err != nil {
				b.Fatal(err)
			}
		}
		// Alternate rounds so machine noise hits both sides alike.
		var rawRate, plinthRate float64
		for range 3 {
			rawRate += rate(be.n, raw)
			plinthRate += rate(be.n, plinth)
		}
		rawRate, plinthRate = rawRate/3, plinthRate/3
		ratio := plinthRate / rawRate
		target, ok := "reported", true
		if be.target > 0 {
			target, ok = fmt.Sprintf(">= %.1fx", be.target), ratio >= be.target
		}
		record("X509-SVID signing, "+be.name+" vs raw crypto/ecdsa", fmt.Sprintf("%.2fx (%.0f vs %.0f/s)", ratio, plinthRate, rawRate), target, ok)

		start := time.Now()
		p, err := authority.Prepare(ctx, ca.X509)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := authority.Activate(ctx, ca.X509, p.ID); err != nil {
			b.Fatal(err)
		}
		record("forced rotation (prepare + activate), "+be.name, ms(time.Since(start)), "reported", true)
	}
}
