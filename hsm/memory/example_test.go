package memory_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"log"
	"math/big"
	"time"

	"github.com/plinth-id/plinth/hsm"
	"github.com/plinth-id/plinth/hsm/memory"
)

// A CA key lives behind the key manager; the CA certificate is signed with it
// as with any crypto.Signer, without the private key ever leaving the manager.
func Example() {
	ctx := context.Background()
	km := memory.New()

	key, err := km.GenerateKey(ctx, "x509-ca-A", hsm.ECP256)
	if err != nil {
		log.Fatal(err)
	}

	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"Plinth"}, CommonName: "example.org CA"},
		NotBefore:             now,
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		log.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		log.Fatal(err)
	}

	// Later, the CA finds its key again by ID.
	again, err := km.GetKey(ctx, "x509-ca-A")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(again.ID(), again.Type(), cert.Subject.CommonName, cert.SignatureAlgorithm)
	fmt.Println("self-signed:", cert.CheckSignatureFrom(cert) == nil)
	// Output:
	// x509-ca-A ec-p256 example.org CA ECDSA-SHA256
	// self-signed: true
}
