package awskms_test

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
	"github.com/plinth-id/plinth/hsm/awskms"
	"github.com/plinth-id/plinth/hsm/awskms/kmstest"
)

// A CA key is generated in KMS and signs the CA certificate; the private key
// never leaves KMS, and Provenance records KMS's evidence of that. The fake
// KMS stands in for AWS: in production, leave out Endpoint and Credentials.
func Example() {
	ctx := context.Background()
	fake := kmstest.New()
	defer fake.Close()

	km, err := awskms.New(ctx, awskms.Config{
		Region:      kmstest.Region,
		Endpoint:    fake.URL,
		Credentials: kmstest.Credentials(),
		AliasPrefix: "alias/plinth/example-org/server-1/",
		ServerID:    "server-1",
	})
	if err != nil {
		log.Fatal(err)
	}
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
	fmt.Println(cert.Subject.CommonName, cert.SignatureAlgorithm, "self-signed:", cert.CheckSignatureFrom(cert) == nil)

	p, err := km.Provenance(ctx, "x509-ca-A")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(p.Backend, "generated inside:", p.GeneratedInside, "non-extractable:", p.NonExtractable, p.Attributes["KeySpec"])
	fmt.Println("alias:", fake.Aliases()["alias/plinth/example-org/server-1/x509-ca-A"] != "")
	// Output:
	// example.org CA ECDSA-SHA256 self-signed: true
	// aws_kms generated inside: true non-extractable: true ECC_NIST_P256
	// alias: true
}
