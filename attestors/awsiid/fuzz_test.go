package awsiid

import (
	"context"
	"crypto/x509"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/plinth-id/plinth/attestors"
	"github.com/plinth-id/plinth/simulator"
)

// FuzzAttest feeds arbitrary payloads through the whole server-side parse and
// verification (payload JSON, base64, BER/DER PKCS#7, document JSON). It must
// never panic, must refuse with ErrRejected, and anything it accepts must
// carry an agent ID made of the document's own fields.
func FuzzAttest(f *testing.F) {
	k := newTestKey(f, 0, nil, big.NewInt(0x5eed))
	doc := simulator.MarshalAWSDocument(simulator.AWSIdentityDocument{PendingTime: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)})
	f.Add(payload(f, doc, k.sign(f, doc, signOpts{})))
	f.Add(payload(f, []byte(capturedDocument), capturedRSA2048))
	f.Add(payload(f, doc, "MIAGCSqGSIb3DQEHAqCAMIACAQEx"))
	f.Add([]byte(`{"v":1,"document":"{}","rsa2048":"MA=="}`))
	f.Add([]byte(`{"v":1}`))
	f.Add([]byte("{"))

	s := newServer(f, ServerConfig{Certs: []*x509.Certificate{k.cert}, AllowReattestation: true})
	f.Fuzz(func(t *testing.T, b []byte) {
		res, err := s.Attest(context.Background(), b, nil)
		if err != nil {
			if !errors.Is(err, attestors.ErrRejected) {
				t.Fatalf("refusal does not wrap ErrRejected: %v", err)
			}
			return
		}
		p, err := DecodePayload(b)
		if err != nil {
			t.Fatalf("accepted a payload DecodePayload refuses: %v", err)
		}
		d, err := parseDocument([]byte(p.Document))
		if err != nil {
			t.Fatalf("accepted a document parseDocument refuses: %v", err)
		}
		want := "spiffe://example.org/spire/agent/aws_iid/" + d.AccountID + "/" + d.Region + "/" + d.InstanceID
		if res.AgentID.String() != want || strings.Count(res.AgentID.Path(), "/") != 6 {
			t.Fatalf("agent ID %s, want %s", res.AgentID, want)
		}
	})
}

// FuzzDecodePayload: the strict payload decoder never panics and accepts only
// version 1 with both fields.
func FuzzDecodePayload(f *testing.F) {
	f.Add([]byte(`{"v":1,"document":"d","rsa2048":"s"}`))
	f.Add([]byte(`{"v":1,"document":"d","rsa2048":"s"} {}`))
	f.Add([]byte(`{"v":2}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := DecodePayload(b)
		if err == nil && (p.V != Version || p.Document == "" || p.RSA2048 == "" || len(b) > MaxPayloadSize) {
			t.Fatalf("accepted %q as %+v", b, p)
		}
	})
}
