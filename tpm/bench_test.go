package tpm_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/plinth-id/plinth/tpm"
)

// BenchmarkOps measures each device-side step of an attestation on both
// backends: go test -run '^$' -bench Ops ./tpm/
func BenchmarkOps(b *testing.B) {
	for _, be := range []struct {
		name string
		open func(testing.TB) *env
	}{{"inprocess", inProcess}, {"swtpm", swtpm}} {
		b.Run(be.name, func(b *testing.B) {
			e := be.open(b)
			ctx := context.Background()
			ek, err := e.TPM.EK(ctx)
			if err != nil {
				b.Fatal(err)
			}
			akECC, err := e.TPM.CreateAK(ctx, tpm.AKECCP256)
			if err != nil {
				b.Fatal(err)
			}
			akRSA, err := e.TPM.CreateAK(ctx, tpm.AKRSA2048)
			if err != nil {
				b.Fatal(err)
			}
			key, err := e.TPM.CreateKey(ctx)
			if err != nil {
				b.Fatal(err)
			}
			s, err := e.TPM.Signer(key)
			if err != nil {
				b.Fatal(err)
			}
			nonce := make([]byte, 32)
			bench := func(name string, f func() error) {
				b.Run(name, func(b *testing.B) {
					for b.Loop() {
						if err := f(); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
			bench("EK", func() error { _, err := e.TPM.EK(ctx); return err })
			bench("CreateAK/ecc", func() error { _, err := e.TPM.CreateAK(ctx, tpm.AKECCP256); return err })
			bench("CreateAK/rsa", func() error { _, err := e.TPM.CreateAK(ctx, tpm.AKRSA2048); return err })
			bench("CreateKey", func() error { _, err := e.TPM.CreateKey(ctx); return err })
			for _, ak := range []struct {
				name string
				key  *tpm.Key
			}{{"ecc", akECC}, {"rsa", akRSA}} {
				pub, _ := tpm2.Unmarshal[tpm2.TPMTPublic](ak.key.Public)
				name, _ := tpm2.ObjectName(pub)
				ekPub, _ := tpm2.Unmarshal[tpm2.TPMTPublic](ek.Public)
				kem, err := tpm2.ImportEncapsulationKey(ekPub)
				if err != nil {
					b.Fatal(err)
				}
				id, enc, err := tpm2.CreateCredential(rand.Reader, kem, name.Buffer, nonce)
				if err != nil {
					b.Fatal(err)
				}
				bench("Activate/"+ak.name, func() error {
					_, err := e.TPM.ActivateCredential(ctx, ek, ak.key, id, enc)
					return err
				})
				bench("Quote/"+ak.name, func() error { _, _, _, err := e.TPM.Quote(ctx, ak.key, nonce, sel); return err })
			}
			bench("ReadPCRs", func() error { _, err := e.TPM.ReadPCRs(ctx, sel); return err })
			bench("Certify", func() error { _, _, err := e.TPM.Certify(ctx, key, akECC, nonce); return err })
			d := sha256.Sum256(nil)
			bench("Sign", func() error { _, err := s.Sign(nil, d[:], crypto.SHA256); return err })
		})
	}
}
