package awsiid

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"sync"
	"testing"
	"time"

	"github.com/smallstep/pkcs7"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/plinth-id/plinth/simulator"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// awsName is the subject and issuer of AWS's certificates, so that test
// certificates can impersonate them by name.
var awsName = pkix.Name{
	Country:      []string{"US"},
	Province:     []string{"Washington State"},
	Locality:     []string{"Seattle"},
	Organization: []string{"Amazon Web Services LLC"},
}

// testKey is a signing key with a self-signed certificate, built like AWS's.
type testKey struct {
	key  *rsa.PrivateKey
	cert *x509.Certificate
}

var (
	keyPool   []*rsa.PrivateKey
	keyPoolMu sync.Mutex
)

// rsaKey returns the i-th test key; keys are generated once per test binary.
func rsaKey(tb testing.TB, i int) *rsa.PrivateKey {
	keyPoolMu.Lock()
	defer keyPoolMu.Unlock()
	for len(keyPool) <= i {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			tb.Fatal(err)
		}
		keyPool = append(keyPool, k)
	}
	return keyPool[i]
}

// newTestKey makes a certificate for key number keyIndex, with the given
// subject (raw DER, or awsName when nil) and serial.
func newTestKey(tb testing.TB, keyIndex int, rawSubject []byte, serial *big.Int) *testKey {
	tb.Helper()
	key := rsaKey(tb, keyIndex)
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      awsName,
		RawSubject:   rawSubject,
		NotBefore:    time.Date(2015, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:     time.Date(2195, 1, 1, 0, 0, 0, 0, time.UTC),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return &testKey{key: key, cert: cert}
}

type signOpts struct {
	digest asn1.ObjectIdentifier // default SHA-256
	detach bool
	// certAs, when set, is the certificate named (and embedded) as the
	// signer, while the signature is still made with the key.
	certAs *x509.Certificate
}

// sign makes an rsa2048-style signature of doc.
func (k *testKey) sign(tb testing.TB, doc []byte, o signOpts) string {
	tb.Helper()
	sd, err := pkcs7.NewSignedData(doc)
	if err != nil {
		tb.Fatal(err)
	}
	if o.digest == nil {
		o.digest = pkcs7.OIDDigestAlgorithmSHA256
	}
	sd.SetDigestAlgorithm(o.digest)
	cert := k.cert
	if o.certAs != nil {
		cert = o.certAs
	}
	if err := sd.AddSigner(cert, crypto.PrivateKey(k.key), pkcs7.SignerInfoConfig{}); err != nil {
		tb.Fatal(err)
	}
	if o.detach {
		sd.Detach()
	}
	der, err := sd.Finish()
	if err != nil {
		tb.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(der)
}

func payload(tb testing.TB, doc []byte, rsa2048 string) []byte {
	tb.Helper()
	b, err := json.Marshal(Payload{V: Version, Document: string(doc), RSA2048: rsa2048})
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func mustCert(tb testing.TB, pemBytes []byte) *x509.Certificate {
	tb.Helper()
	b, _ := pem.Decode(pemBytes)
	if b == nil {
		tb.Fatal("no PEM block")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func newIMDS(tb testing.TB, doc simulator.AWSIdentityDocument) *simulator.AWSIMDS {
	tb.Helper()
	m, err := simulator.NewAWSIMDS(doc)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(m.Close)
	return m
}

func never(context.Context, string) (bool, error) { return false, nil }

func fixedClock(t time.Time) func() time.Time { return func() time.Time { return t } }

func newServer(tb testing.TB, c ServerConfig) *Server {
	tb.Helper()
	if c.TrustDomain.IsZero() {
		c.TrustDomain = td
	}
	if c.Attested == nil && !c.AllowReattestation {
		c.Attested = never
	}
	s, err := NewServer(c)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}
