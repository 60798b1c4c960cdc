package memory_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"testing"

	"github.com/plinth-id/plinth/hsm/hsmtest"
	"github.com/plinth-id/plinth/hsm/memory"
)

// BenchmarkSignRawECDSA is the baseline for BenchmarkSignMemory: the same
// P-256 signature over the same digest, with crypto/ecdsa directly.
func BenchmarkSignRawECDSA(b *testing.B) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	digest := sha256.Sum256([]byte("plinth hsm benchmark")) // as hsmtest.BenchmarkSign
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ecdsa.SignASN1(rand.Reader, priv, digest[:]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSignMemory measures Key.Sign of the memory backend; compare it
// with BenchmarkSignRawECDSA from the same run.
func BenchmarkSignMemory(b *testing.B) {
	hsmtest.BenchmarkSign(b, memory.New())
}
