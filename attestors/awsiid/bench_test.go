package awsiid

import (
	"context"
	"crypto/x509"
	"math/big"
	"testing"
	"time"

	"github.com/plinth-id/plinth/simulator"
)

// BenchmarkVerify measures server-side verification of one document without
// the EC2 lookup: payload decode, PKCS#7 parse, RSA-2048 signature check,
// document parse and the policy checks. Target: at most 1 ms of CPU.
func BenchmarkVerify(b *testing.B) {
	b.Run("captured_aws_document", func(b *testing.B) {
		s := newServer(b, ServerConfig{
			AllowReattestation: true,
			Accounts:           []string{"179727101194"},
			MaxInstanceAge:     time.Hour,
			Clock:              fixedClock(time.Date(2017, 12, 29, 6, 0, 0, 0, time.UTC)),
		})
		benchAttest(b, s, payload(b, []byte(capturedDocument), capturedRSA2048))
	})
	b.Run("simulator_document", func(b *testing.B) {
		k := newTestKey(b, 0, nil, big.NewInt(0xbe4c))
		doc := simulator.MarshalAWSDocument(simulator.AWSIdentityDocument{})
		s := newServer(b, ServerConfig{Certs: []*x509.Certificate{k.cert}, Attested: never})
		benchAttest(b, s, payload(b, doc, k.sign(b, doc, signOpts{})))
	})
}

func benchAttest(b *testing.B, s *Server, p []byte) {
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Attest(ctx, p, nil); err != nil {
			b.Fatal(err)
		}
	}
}
