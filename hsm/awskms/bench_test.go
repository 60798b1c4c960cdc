package awskms_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"testing"

	"github.com/plinth-id/plinth/hsm/hsmtest"
)

// BenchmarkSignRaw is the baseline for BenchmarkSignFakeKMS: the same P-256
// signature over the same digest, with crypto/ecdsa directly.
func BenchmarkSignRaw(b *testing.B) {
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

// BenchmarkSignFakeKMS measures Key.Sign against the fake KMS on loopback:
// one signed HTTP request, JSON both ways and the fake's own ECDSA signature
// per call. Compare it with BenchmarkSignRaw from the same run; real KMS
// adds a network round trip of milliseconds on top.
func BenchmarkSignFakeKMS(b *testing.B) {
	s := newServer(b)
	hsmtest.BenchmarkSign(b, newManager(b, config(s, "bench")))
}
