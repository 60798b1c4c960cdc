//go:build cgo

package pkcs11_test

import (
	"crypto"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"testing"

	"github.com/ThalesIgnite/crypto11"

	"github.com/plinth-id/plinth/hsm/hsmtest"
	"github.com/plinth-id/plinth/hsm/pkcs11"
)

// BenchmarkSignRawCrypto11 is the baseline for BenchmarkSignPKCS11: the same
// P-256 signature over the same digest on the same SoftHSM token, with
// crypto11 directly. Compare the two from the same run.
func BenchmarkSignRawCrypto11(b *testing.B) {
	c, err := crypto11.Configure(&crypto11.Config{Path: softhsm.Module, TokenLabel: softhsm.TokenLabel, Pin: softhsm.PIN})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	label := []byte("bench/raw-crypto11")
	s, err := c.GenerateECDSAKeyPairWithLabel(label, label, elliptic.P256())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Delete()
	digest := sha256.Sum256([]byte("plinth hsm benchmark")) // as hsmtest.BenchmarkSign
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSignPKCS11 measures Key.Sign of this backend on SoftHSM; compare
// it with BenchmarkSignRawCrypto11 from the same run.
func BenchmarkSignPKCS11(b *testing.B) {
	m, err := pkcs11.New(config("bench/"))
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	hsmtest.BenchmarkSign(b, m)
	b.StopTimer()
	if err := m.DeleteKey(b.Context(), "hsmtest-bench"); err != nil {
		b.Fatal(err)
	}
}
