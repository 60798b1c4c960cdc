//go:build cgo

package verify_test

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/plinth-id/plinth/simulator"
	"github.com/plinth-id/plinth/tpm"
	"github.com/plinth-id/plinth/tpm/verify"
)

// One whole attestation: the agent's TPM is the in-process simulator
// (package tpm drives it), and the server's checks are this package's.
func Example() {
	dir, err := os.MkdirTemp("", "verify-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	stateFile := filepath.Join(dir, "sim.json")
	sim, err := simulator.OpenInProcess(stateFile)
	if err != nil {
		log.Fatal(err)
	}
	defer sim.Close()
	ctx := context.Background()
	caPEM, _ := simulator.ManufacturerCAPEM(stateFile) // the server's manufacturer CA bundle

	// Agent: EK (with certificate) and a new AK.
	agentEK, _ := sim.EK(ctx)
	agentAK, _ := sim.CreateAK(ctx, tpm.AKECCP256)

	// Server: trust the EK, check the AK, challenge.
	v, err := verify.LoadEKVerifier(caPEM)
	if err != nil {
		log.Fatal(err)
	}
	ek, err := verify.ParsePublic(agentEK.Public)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := v.Verify(agentEK.Cert, ek, time.Now()); err != nil {
		log.Fatal(err)
	}
	ak, err := verify.ParsePublic(agentAK.Public)
	if err != nil {
		log.Fatal(err)
	}
	if err := verify.CheckAK(ak); err != nil {
		log.Fatal(err)
	}
	secret, nonce := make([]byte, 32), make([]byte, 32)
	rand.Read(secret)
	rand.Read(nonce)
	idObject, encSecret, err := verify.MakeCredential(ek, ak.Name, secret)
	if err != nil {
		log.Fatal(err)
	}

	// Agent: answer.
	sel := verify.PCRSelection{tpm2.TPMAlgSHA256: {0, 1, 2, 3, 4, 5, 6, 7}}
	activated, _ := sim.ActivateCredential(ctx, agentEK, agentAK, idObject, encSecret)
	quote, quoteSig, pcrs, _ := sim.Quote(ctx, agentAK, nonce, sel)
	agentKey, _ := sim.CreateKey(ctx)
	certify, certifySig, _ := sim.Certify(ctx, agentKey, agentAK, nonce)

	// Server: verify the answers.
	fmt.Println("activated:", subtle.ConstantTimeCompare(activated, secret) == 1)
	fmt.Println("quote:", verify.VerifyQuote(ak, quote, quoteSig, nonce, sel, pcrs))
	key, err := verify.ParsePublic(agentKey.Public)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("agent key:", verify.CheckAgentKey(key))
	fmt.Println("certify:", verify.VerifyCertify(ak, certify, certifySig, nonce, key))
	// Output:
	// activated: true
	// quote: <nil>
	// agent key: <nil>
	// certify: <nil>
}
