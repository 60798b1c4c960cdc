//go:build cgo

package pkcs11_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log"
	"math/big"
	"os"
	"time"

	"github.com/plinth-id/plinth/hsm"
	"github.com/plinth-id/plinth/hsm/pkcs11"
)

// A CA key on a token: the module, token and PIN come from the environment,
// as they would for a server (here, from the SoftHSM token the tests start).
func Example() {
	ctx := context.Background()
	km, err := pkcs11.New(pkcs11.Config{
		Module:      os.Getenv("PLINTH_PKCS11_MODULE"),
		TokenLabel:  os.Getenv("PLINTH_PKCS11_TOKEN"),
		PIN:         os.Getenv("PLINTH_PKCS11_PIN"),
		KeyIDPrefix: "example/",
	})
	if err != nil {
		log.Fatal(err)
	}
	defer km.Close()

	key, err := km.GetKey(ctx, "x509-ca-A")
	if errors.Is(err, hsm.ErrNotFound) {
		key, err = km.GenerateKey(ctx, "x509-ca-A", hsm.ECP256)
	}
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
	fmt.Println(cert.Subject.CommonName, cert.SignatureAlgorithm, cert.CheckSignatureFrom(cert) == nil)

	// Where the key lives, and what the token says about it.
	p, err := km.Provenance(ctx, "x509-ca-A")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(p.Location)
	fmt.Println("generated inside:", p.GeneratedInside, "non-extractable:", p.NonExtractable)
	// Output:
	// example.org CA ECDSA-SHA256 true
	// pkcs11:token=plinth-test;object=example%2Fx509-ca-A
	// generated inside: true non-extractable: true
}
