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

	"github.com/plinth-id/plinth/hsm/memory"
	"github.com/plinth-id/plinth/server/ca"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

type mapJournal struct{ data []byte }

func (j *mapJournal) Load(context.Context) ([]byte, error)   { return j.data, nil }
func (j *mapJournal) Save(_ context.Context, d []byte) error { j.data = d; return nil }

// BenchmarkSigning compares the CA's X509-SVID signing path (through the
// hsm contract, memory backend) with x509.CreateCertificate over a plain
// *ecdsa.PrivateKey, in the same run. Target: >= 0.8x.
func BenchmarkSigning(b *testing.B) {
	ctx := context.Background()
	td := spiffeid.RequireTrustDomainFromString("example.org")
	id := spiffeid.RequireFromPath(td, "/workload")
	authority, err := ca.New(ctx, ca.Config{TrustDomain: td, Keys: memory.New(), Journal: &mapJournal{}})
	if err != nil {
		b.Fatal(err)
	}
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)

	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "raw"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	caCert, _ := x509.ParseCertificate(caDER)
	raw := func() {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), URIs: []*url.URL{id.URL()}, KeyUsage: x509.KeyUsageDigitalSignature}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, leafKey.Public(), caKey)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := x509.ParseCertificate(der); err != nil {
			b.Fatal(err)
		}
	}
	plinth := func() {
		if _, err := authority.SignX509SVID(ctx, ca.X509Params{ID: id, PublicKey: leafKey.Public()}); err != nil {
			b.Fatal(err)
		}
	}
	const n = 3000
	rate := func(f func()) float64 {
		start := time.Now()
		for range n {
			f()
		}
		return n / time.Since(start).Seconds()
	}
	// Alternate rounds so machine noise hits both sides alike.
	var rawRate, plinthRate float64
	for range 3 {
		rawRate += rate(raw)
		plinthRate += rate(plinth)
	}
	rawRate, plinthRate = rawRate/3, plinthRate/3
	ratio := plinthRate / rawRate
	b.ReportMetric(plinthRate, "svids/s")
	b.ReportMetric(ratio, "x_raw")
	record("X509-SVID signing, CA path vs raw crypto/ecdsa", fmt.Sprintf("%.2fx (%.0f vs %.0f/s)", ratio, plinthRate, rawRate), ">= 0.8x", ratio >= 0.8)
}
