//go:build cgo

package verify_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/plinth-id/plinth/simulator"
	"github.com/plinth-id/plinth/tpm"
	"github.com/plinth-id/plinth/tpm/verify"
)

// The simulator tier: the device package drives a real (simulated) TPM and
// this package verifies what it produced, the way the server will. The
// in-process simulator is a process-wide singleton, so these tests do not
// run in parallel.

func TestSimulatorAttestation(t *testing.T) {
	stateFile := filepath.Join(t.TempDir(), "sim.json")
	sim, err := simulator.OpenInProcess(stateFile)
	if err != nil {
		t.Fatalf("OpenInProcess: %v", err)
	}
	defer sim.Close()
	caPEM, err := simulator.ManufacturerCAPEM(stateFile)
	if err != nil {
		t.Fatal(err)
	}
	attestAll(t, sim.TPM, caPEM)
}

// TestSWTPMAttestation runs the same against swtpm, whose EK certificate
// comes from swtpm-localca with the critical directoryName SAN.
func TestSWTPMAttestation(t *testing.T) {
	if _, err := exec.LookPath("swtpm"); err != nil {
		t.Skip("swtpm is not installed")
	}
	dir := t.TempDir()
	st, err := simulator.ProvisionSWTPM(filepath.Join(dir, "state"))
	if err != nil {
		t.Fatalf("ProvisionSWTPM: %v", err)
	}
	sw, err := simulator.StartSWTPM(context.Background(), st, dir)
	if err != nil {
		t.Fatalf("StartSWTPM: %v", err)
	}
	defer sw.Stop()
	dev, err := sw.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	cert := attestAll(t, dev, st.CAPEM)
	// The quirk is really there, and was handled rather than missed.
	if len(cert.UnhandledCriticalExtensions) != 1 || !cert.UnhandledCriticalExtensions[0].Equal(oidSAN) {
		t.Errorf("swtpm's EK certificate: unhandled critical extensions %v, want only the SAN", cert.UnhandledCriticalExtensions)
	}
}

// attestAll plays one whole attestation, agent and server, and then the
// attacks the server must catch.
// It returns the verified EK certificate.
func attestAll(t *testing.T, dev *tpm.TPM, caPEM []byte) *x509.Certificate {
	ctx := context.Background()

	// Server: trust the EK through its certificate.
	ek, err := dev.EK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ekPub, err := verify.ParsePublic(ek.Public)
	if err != nil {
		t.Fatalf("EK: %v", err)
	}
	ekv, err := verify.LoadEKVerifier(caPEM)
	if err != nil {
		t.Fatal(err)
	}
	if ek.Cert == nil {
		t.Fatal("the TPM has no EK certificate")
	}
	cert, err := ekv.Verify(ek.Cert, ekPub, time.Now())
	if err != nil {
		t.Fatalf("EK certificate: %v", err)
	}
	info, err := verify.ParseEKCertInfo(cert)
	if err != nil {
		t.Fatal(err)
	}
	hash, err := verify.EKHash(ekPub)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("EK %s (%s), manufacturer %q, model %q, version %q, issuer %q", hash, map[tpm2.TPMAlgID]string{tpm2.TPMAlgRSA: "RSA", tpm2.TPMAlgECC: "ECC"}[ekPub.Area.Type], info.Manufacturer, info.Model, info.Version, info.Issuer)

	banks, err := dev.PCRBanks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := verify.PCRSelection{}
	for _, b := range banks {
		if b == tpm2.TPMAlgSHA1 || b == tpm2.TPMAlgSHA256 {
			want[b] = []int{0, 1, 2, 3, 4, 5, 6, 7}
		}
	}

	for _, alg := range []tpm.AKAlg{tpm.AKECCP256, tpm.AKRSA2048} {
		t.Run(string(alg), func(t *testing.T) {
			ak, err := dev.CreateAK(ctx, alg)
			if err != nil {
				t.Fatal(err)
			}
			akPub, err := verify.ParsePublic(ak.Public)
			if err != nil {
				t.Fatal(err)
			}
			if err := verify.CheckAK(akPub); err != nil {
				t.Fatal(err)
			}

			// Credential activation.
			secret := make([]byte, 32)
			rand.Read(secret)
			idObject, encSecret, err := verify.MakeCredential(ekPub, akPub.Name, secret)
			if err != nil {
				t.Fatal(err)
			}
			got, err := dev.ActivateCredential(ctx, ek, ak, idObject, encSecret)
			if err != nil {
				t.Fatalf("ActivateCredential: %v", err)
			}
			if !bytes.Equal(got, secret) {
				t.Fatal("activated secret differs")
			}
			// A challenge for another AK's Name does not activate with this AK.
			otherName := append([]byte(nil), akPub.Name...)
			otherName[len(otherName)-1] ^= 1
			idObject, encSecret, err = verify.MakeCredential(ekPub, otherName, secret)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := dev.ActivateCredential(ctx, ek, ak, idObject, encSecret); err == nil {
				t.Error("a credential for another Name was activated")
			}

			// Quote.
			nonce := make([]byte, 32)
			rand.Read(nonce)
			attest, sig, pcrs, err := dev.Quote(ctx, ak, nonce, want)
			if err != nil {
				t.Fatal(err)
			}
			if err := verify.VerifyQuote(akPub, attest, sig, nonce, want, pcrs); err != nil {
				t.Fatalf("VerifyQuote: %v", err)
			}
			wantErr(t, verify.VerifyQuote(akPub, attest, sig, bytes.Repeat([]byte{1}, 32), want, pcrs),
				"verify: quote: nonce does not match the challenge")
			// A PCR changes: yesterday's values do not match today's quote.
			ext := map[tpm2.TPMAlgID][]byte{}
			for b := range want {
				h, _ := b.Hash()
				ext[b] = bytes.Repeat([]byte{0xee}, h.Size())
			}
			if err := dev.Extend(ctx, 7, ext); err != nil {
				t.Fatal(err)
			}
			attest2, sig2, pcrs2, err := dev.Quote(ctx, ak, nonce, want)
			if err != nil {
				t.Fatal(err)
			}
			if err := verify.VerifyQuote(akPub, attest2, sig2, nonce, want, pcrs2); err != nil {
				t.Fatalf("VerifyQuote after extend: %v", err)
			}
			wantErr(t, verify.VerifyQuote(akPub, attest2, sig2, nonce, want, pcrs),
				"verify: quote: PCR digest does not match the reported PCR values")
			// A quote over less than asked for.
			small := verify.PCRSelection{tpm2.TPMAlgSHA256: {0}}
			attest3, sig3, pcrs3, err := dev.Quote(ctx, ak, nonce, small)
			if err != nil {
				t.Fatal(err)
			}
			if len(want) > 1 {
				wantErr(t, verify.VerifyQuote(akPub, attest3, sig3, nonce, want, pcrs3), "verify: quote: quote does not cover bank SHA-1")
			} else {
				wantErr(t, verify.VerifyQuote(akPub, attest3, sig3, nonce, want, pcrs3), "verify: quote: quote does not cover PCR 1 in bank SHA-256")
			}

			// Agent key, certified by the AK.
			key, err := dev.CreateKey(ctx)
			if err != nil {
				t.Fatal(err)
			}
			keyPub, err := verify.ParsePublic(key.Public)
			if err != nil {
				t.Fatal(err)
			}
			if err := verify.CheckAgentKey(keyPub); err != nil {
				t.Fatal(err)
			}
			cattest, csig, err := dev.Certify(ctx, key, ak, nonce)
			if err != nil {
				t.Fatal(err)
			}
			if err := verify.VerifyCertify(akPub, cattest, csig, nonce, keyPub); err != nil {
				t.Fatalf("VerifyCertify: %v", err)
			}
			wantErr(t, verify.VerifyCertify(akPub, cattest, csig, nonce, akPub),
				"verify: certify: certified key is not the presented agent key")
			// A certification is not a quote, and the other way round.
			wantErr(t, verify.VerifyQuote(akPub, cattest, csig, nonce, want, pcrs2), "verify: quote: attestation type is certify, want quote")
			wantErr(t, verify.VerifyCertify(akPub, attest2, sig2, nonce, keyPub), "verify: certify: attestation type is quote, want certify")
		})
	}

	// An AK of another TPM-resident kind: the agent key itself cannot
	// pass for an AK.
	key, err := dev.CreateKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	keyPub, err := verify.ParsePublic(key.Public)
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, verify.CheckAK(keyPub), "verify: ak: not a restricted signing key")
	return cert
}
