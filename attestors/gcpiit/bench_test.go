package gcpiit_test

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"testing"

	"github.com/plinth-id/plinth/attestors/gcpiit"
)

// BenchmarkAttest measures the server's verification of one token: payload
// decoding, RS256 signature, claims and selectors (keys cached, replay lookup
// in memory).
func BenchmarkAttest(b *testing.B) {
	sim := newSim(b)
	s, _ := newServer(b, sim, nil)
	tok, err := sim.Token(gcpiit.DefaultAudience)
	if err != nil {
		b.Fatal(err)
	}
	p := payload(b, tok)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Attest(b.Context(), p, noChallenge); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRSAVerifyBaseline is the raw RS256 verification BenchmarkAttest
// cannot go below, measured in the same run for a ratio.
func BenchmarkRSAVerifyBaseline(b *testing.B) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	digest := sha256.Sum256([]byte("header.claims"))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, digest[:])
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := rsa.VerifyPKCS1v15(&key.PublicKey, crypto.SHA256, digest[:], sig); err != nil {
			b.Fatal(err)
		}
	}
}
