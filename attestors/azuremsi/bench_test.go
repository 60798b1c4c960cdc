package azuremsi_test

import (
	"testing"

	"github.com/plinth-id/plinth/attestors/azuremsi"
)

// BenchmarkAttest measures the server's verification of one token: payload
// decoding, tenant lookup, RS256 signature, claims and selectors (keys
// cached, replay lookup in memory).
func BenchmarkAttest(b *testing.B) {
	sim := newSim(b, ident)
	s, _ := newServer(b, sim, nil)
	tok, err := sim.Token(azuremsi.DefaultResource)
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
