package tpm_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/google/go-tpm/tpm2"

	"github.com/plinth-id/plinth/simulator"
	"github.com/plinth-id/plinth/tpm"
	"github.com/plinth-id/plinth/tpm/verify"
)

// The device side of one attestation, against the in-process simulator. The
// server's part (MakeCredential) is inlined; a real server also verifies the
// EK certificate, the quote and the certification (package tpm/verify).
func Example() {
	dir, err := os.MkdirTemp("", "example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sim, err := simulator.OpenInProcess(filepath.Join(dir, "sim.json"))
	if err != nil {
		log.Fatal(err)
	}
	defer sim.Close()
	ctx := context.Background()

	// Agent: EK and a new AK.
	ek, err := sim.EK(ctx)
	if err != nil {
		log.Fatal(err)
	}
	ak, err := sim.CreateAK(ctx, tpm.AKECCP256)
	if err != nil {
		log.Fatal(err)
	}

	// Server: seal a secret to the EK and the AK's Name.
	ekPub, _ := tpm2.Unmarshal[tpm2.TPMTPublic](ek.Public)
	akPub, _ := tpm2.Unmarshal[tpm2.TPMTPublic](ak.Public)
	akName, _ := tpm2.ObjectName(akPub)
	kem, _ := tpm2.ImportEncapsulationKey(ekPub)
	secret := make([]byte, 32)
	rand.Read(secret)
	idObject, encSecret, _ := tpm2.CreateCredential(rand.Reader, kem, akName.Buffer, secret)
	nonce := make([]byte, 32)
	rand.Read(nonce)

	// Agent: activate, quote, and certify a TPM-resident TLS key.
	got, err := sim.ActivateCredential(ctx, ek, ak, idObject, encSecret)
	if err != nil {
		log.Fatal(err)
	}
	_, _, pcrs, err := sim.Quote(ctx, ak, nonce, verify.PCRSelection{tpm2.TPMAlgSHA256: {0, 1, 2, 3, 4, 5, 6, 7}})
	if err != nil {
		log.Fatal(err)
	}
	key, err := sim.CreateKey(ctx)
	if err != nil {
		log.Fatal(err)
	}
	if _, _, err := sim.Certify(ctx, key, ak, nonce); err != nil {
		log.Fatal(err)
	}
	signer, err := sim.Signer(key)
	if err != nil {
		log.Fatal(err)
	}
	digest := sha256.Sum256([]byte("hello"))
	if _, err := signer.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
		log.Fatal(err)
	}

	fmt.Println("EK certificate:", ek.Cert != nil)
	fmt.Println("secret recovered:", bytes.Equal(got, secret))
	fmt.Println("PCRs quoted:", len(pcrs[tpm2.TPMAlgSHA256]))
	// Output:
	// EK certificate: true
	// secret recovered: true
	// PCRs quoted: 8
}
