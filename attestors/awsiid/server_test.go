package awsiid

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/plinth-id/plinth/attestors"
	"github.com/plinth-id/plinth/simulator"
	"github.com/smallstep/pkcs7"
)

func selectorStrings(ss []attestors.Selector) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = s.String()
	}
	return out
}

func TestAttestWithSimulator(t *testing.T) {
	pending := time.Date(2026, 5, 1, 8, 0, 0, 0, time.UTC)
	m := newIMDS(t, simulator.AWSIdentityDocument{
		AccountID: "111122223333", Region: "eu-west-1", InstanceID: "i-0abc1234def567890",
		ImageID: "ami-0fedcba9876543210", InstanceType: "m7g.large", AvailabilityZone: "eu-west-1b", PendingTime: pending,
	})
	agent, err := NewAgent(AgentConfig{Endpoint: m.URL()})
	if err != nil {
		t.Fatal(err)
	}
	p, err := agent.Payload(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var asked []string
	s := newServer(t, ServerConfig{
		Certs:          []*x509.Certificate{mustCert(t, m.CertPEM())},
		Accounts:       []string{"111122223333"},
		Regions:        []string{"eu-west-1", "us-east-1"},
		MaxInstanceAge: time.Hour,
		Attested: func(_ context.Context, id string) (bool, error) {
			asked = append(asked, id)
			return false, nil
		},
		Clock: fixedClock(pending.Add(59 * time.Minute)),
	})
	res, err := s.Attest(context.Background(), p, nil)
	if err != nil {
		t.Fatal(err)
	}
	const wantID = "spiffe://example.org/spire/agent/aws_iid/111122223333/eu-west-1/i-0abc1234def567890"
	if res.AgentID.String() != wantID {
		t.Errorf("agent ID = %s, want %s", res.AgentID, wantID)
	}
	if !slices.Equal(asked, []string{wantID}) {
		t.Errorf("Attested asked about %v", asked)
	}
	want := []string{
		"aws_iid:account:111122223333",
		"aws_iid:az:eu-west-1b",
		"aws_iid:image:id:ami-0fedcba9876543210",
		"aws_iid:instance:id:i-0abc1234def567890",
		"aws_iid:instance:type:m7g.large",
		"aws_iid:region:eu-west-1",
	}
	if got := selectorStrings(res.Selectors); !slices.Equal(got, want) {
		t.Errorf("selectors =\n%v\nwant\n%v", got, want)
	}
	if res.CanReattest {
		t.Error("CanReattest without AllowReattestation")
	}
	if res.Evidence["pending_time"] != "2026-05-01T08:00:00Z" || res.Evidence["ec2_lookup"] != "off" ||
		res.Evidence["signer"] != `configured certificate "CN=Plinth simulated AWS IMDS (TEST ONLY),O=Plinth test"` {
		t.Errorf("evidence = %v", res.Evidence)
	}
}

// TestAttestRejects covers every refusal with its exact message.
func TestAttestRejects(t *testing.T) {
	trustedKey := newTestKey(t, 0, nil, big.NewInt(0x1001))
	otherKey := newTestKey(t, 1, nil, big.NewInt(0x2002))
	// The attacker's certificate names the trusted issuer and serial.
	impostor := newTestKey(t, 1, trustedKey.cert.RawSubject, trustedKey.cert.SerialNumber)
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	doc := simulator.MarshalAWSDocument(simulator.AWSIdentityDocument{
		AccountID: "123456789012", Region: "us-west-2", InstanceID: "i-0123456789abcdef0",
		PendingTime: now.Add(-48 * time.Hour),
	})
	otherDoc := simulator.MarshalAWSDocument(simulator.AWSIdentityDocument{
		AccountID: "123456789012", Region: "us-west-2", InstanceID: "i-0fffffffffffffff0",
		PendingTime: now.Add(-48 * time.Hour),
	})
	good := trustedKey.sign(t, doc, signOpts{})
	der, _ := base64.StdEncoding.DecodeString(good)
	alteredDoc := bytes.Replace(doc, []byte("123456789012"), []byte("999999999999"), 1)
	alteredSig := base64.StdEncoding.EncodeToString(bytes.Replace(der, []byte("123456789012"), []byte("999999999999"), 1))
	signed := func(d string) []byte { return payload(t, []byte(d), trustedKey.sign(t, []byte(d), signOpts{})) }

	cases := []struct {
		name    string
		cfg     ServerConfig
		payload []byte
		want    string
	}{
		{
			name:    "not JSON",
			payload: []byte("hello"),
			want:    "malformed payload: invalid character 'h' looking for beginning of value",
		},
		{
			name:    "unknown field",
			payload: []byte(`{"v":1,"document":"x","rsa2048":"y","signature":"z"}`),
			want:    `malformed payload: json: unknown field "signature"`,
		},
		{
			name:    "other version",
			payload: []byte(`{"v":2,"document":"x","rsa2048":"y"}`),
			want:    "payload version 2 is not supported (want 1)",
		},
		{
			name:    "no signature",
			payload: []byte(`{"v":1,"document":"x"}`),
			want:    "payload has no rsa2048 signature",
		},
		{
			name:    "signature not base64",
			payload: payload(t, doc, "%%%"),
			want:    "rsa2048 signature is not base64: illegal base64 data at input byte 0",
		},
		{
			name:    "signature not PKCS#7",
			payload: payload(t, doc, "aGVsbG8="),
			want:    "rsa2048 signature is not a PKCS#7 SignedData: ber2der: BER tag length is more than available data",
		},
		{
			name:    "signed by an untrusted key",
			payload: payload(t, doc, otherKey.sign(t, doc, signOpts{})),
			want:    `signed by an untrusted key: no trusted certificate has issuer "O=Amazon Web Services LLC,L=Seattle,ST=Washington State,C=US" and serial 2002`,
		},
		{
			// The class of SPIRE's azure_msi bug: the evidence carries a
			// certificate with the trusted name and serial but the attacker's
			// key, and is signed with that key.
			name:    "signed by an impostor certificate with the trusted issuer and serial",
			payload: payload(t, doc, impostor.sign(t, doc, signOpts{})),
			want:    `signed by an untrusted key: the signature does not verify with the configured certificate "O=Amazon Web Services LLC,L=Seattle,ST=Washington State,C=US" (serial 1001): crypto/rsa: verification error`,
		},
		{
			name:    "valid signature over a different document",
			payload: payload(t, otherDoc, good),
			want:    "the PKCS#7 signs a different document than the one presented",
		},
		{
			name:    "document with a byte changed",
			payload: payload(t, []byte(strings.Replace(string(doc), "us-west-2", "us-west-1", 1)), good),
			want:    "the PKCS#7 signs a different document than the one presented",
		},
		{
			name:    "embedded signer certificate differs from the trusted one",
			payload: payload(t, doc, trustedKey.sign(t, doc, signOpts{certAs: impostor.cert})),
			want:    "PKCS#7 signer certificate differs from the trusted certificate",
		},
		{
			name:    "SHA-1",
			payload: payload(t, doc, trustedKey.sign(t, doc, signOpts{digest: pkcs7.OIDDigestAlgorithmSHA1})),
			want:    "PKCS#7 digest algorithm 1.3.14.3.2.26 is not allowed (want SHA-256, SHA-384 or SHA-512)",
		},
		{
			name:    "detached signature",
			payload: payload(t, doc, trustedKey.sign(t, doc, signOpts{detach: true})),
			want:    "PKCS#7 carries no signed content",
		},
		{
			// The attacker edits the document inside AWS's PKCS#7 and presents
			// the edited document: the signed digest no longer matches.
			name:    "content altered inside the PKCS#7",
			payload: payload(t, alteredDoc, alteredSig),
			want:    "the PKCS#7 content does not match its signed digest (altered after signing)",
		},
		{
			name:    "signed document is not JSON",
			payload: signed("not json"),
			want:    "instance identity document is not valid JSON: invalid character 'o' in literal null (expecting 'u')",
		},
		{
			name:    "malformed account",
			payload: signed(`{"accountId":"12","region":"us-west-2","instanceId":"i-0123456789abcdef0"}`),
			want:    `instance identity document accountId "12" is malformed`,
		},
		{
			name:    "path traversal in instance ID",
			payload: signed(`{"accountId":"123456789012","region":"us-west-2","instanceId":"../../x"}`),
			want:    `instance identity document instanceId "../../x" is malformed`,
		},
		{
			name:    "no region",
			payload: signed(`{"accountId":"123456789012","instanceId":"i-0123456789abcdef0"}`),
			want:    "instance identity document has no region",
		},
		{
			name:    "account not allowed",
			cfg:     ServerConfig{Accounts: []string{"210987654321", "111122223333"}},
			payload: payload(t, doc, good),
			want:    "account 123456789012 is not allowed (allowed: 210987654321, 111122223333)",
		},
		{
			name:    "region not allowed",
			cfg:     ServerConfig{Regions: []string{"eu-central-1"}},
			payload: payload(t, doc, good),
			want:    "region us-west-2 is not allowed (allowed: eu-central-1)",
		},
		{
			name:    "instance too old",
			cfg:     ServerConfig{MaxInstanceAge: 24 * time.Hour},
			payload: payload(t, doc, good),
			want:    "instance i-0123456789abcdef0 is too old: pending since 2026-05-30T00:00:00Z (48h0m0s ago), max_instance_age is 24h0m0s",
		},
		{
			name:    "no pendingTime with an age limit",
			cfg:     ServerConfig{MaxInstanceAge: 24 * time.Hour},
			payload: signed(`{"accountId":"123456789012","region":"us-west-2","instanceId":"i-0123456789abcdef0"}`),
			want:    "instance i-0123456789abcdef0: the document has no pendingTime, so its age cannot be checked",
		},
		{
			name:    "replayed document for an already-attested instance",
			cfg:     ServerConfig{Attested: func(context.Context, string) (bool, error) { return true, nil }},
			payload: payload(t, doc, good),
			want:    "instance i-0123456789abcdef0 has already attested; set allow_reattestation or evict the agent",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Certs = append(tc.cfg.Certs, trustedKey.cert)
			tc.cfg.Clock = fixedClock(now)
			s := newServer(t, tc.cfg)
			res, err := s.Attest(context.Background(), tc.payload, nil)
			if err == nil {
				t.Fatalf("accepted as %s", res.AgentID)
			}
			if !errors.Is(err, attestors.ErrRejected) {
				t.Errorf("error does not wrap ErrRejected: %v", err)
			}
			if want := "attestation rejected: " + tc.want; err.Error() != want {
				t.Errorf("error =\n%s\nwant\n%s", err, want)
			}
		})
	}

	t.Run("accepted with the same trust", func(t *testing.T) {
		s := newServer(t, ServerConfig{Certs: []*x509.Certificate{trustedKey.cert}, Clock: fixedClock(now), MaxInstanceAge: 72 * time.Hour})
		if _, err := s.Attest(context.Background(), payload(t, doc, good), nil); err != nil {
			t.Fatal(err)
		}
	})
}

func TestReattestation(t *testing.T) {
	k := newTestKey(t, 0, nil, big.NewInt(7))
	doc := simulator.MarshalAWSDocument(simulator.AWSIdentityDocument{})
	p := payload(t, doc, k.sign(t, doc, signOpts{}))
	attested := map[string]bool{}
	seen := func(_ context.Context, id string) (bool, error) { return attested[id], nil }

	strict := newServer(t, ServerConfig{Certs: []*x509.Certificate{k.cert}, Attested: seen})
	res, err := strict.Attest(context.Background(), p, nil)
	if err != nil {
		t.Fatal(err)
	}
	attested[res.AgentID.String()] = true
	if _, err := strict.Attest(context.Background(), p, nil); !errors.Is(err, attestors.ErrRejected) {
		t.Fatalf("second attestation: %v", err)
	}

	lenient := newServer(t, ServerConfig{Certs: []*x509.Certificate{k.cert}, Attested: seen, AllowReattestation: true})
	res, err = lenient.Attest(context.Background(), p, nil)
	if err != nil {
		t.Fatalf("with AllowReattestation: %v", err)
	}
	if !res.CanReattest {
		t.Error("CanReattest is false with AllowReattestation")
	}

	// A failing lookup is an internal error, not a rejection.
	boom := errors.New("datastore down")
	broken := newServer(t, ServerConfig{Certs: []*x509.Certificate{k.cert}, Attested: func(context.Context, string) (bool, error) { return false, boom }})
	_, err = broken.Attest(context.Background(), p, nil)
	if !errors.Is(err, boom) || errors.Is(err, attestors.ErrRejected) {
		t.Fatalf("err = %v", err)
	}
}

// TestRegionBinding: a shipped certificate signs only for its region.
func TestRegionBinding(t *testing.T) {
	k := newTestKey(t, 0, nil, big.NewInt(9))
	doc := simulator.MarshalAWSDocument(simulator.AWSIdentityDocument{Region: "us-east-1"})
	s := newServer(t, ServerConfig{})
	// Pretend k is AWS's eu-west-1 certificate.
	s.trust[issuerSerialKey(k.cert.RawIssuer, k.cert.SerialNumber)] = []trusted{{cert: k.cert, region: "eu-west-1"}}
	_, err := s.Attest(context.Background(), payload(t, doc, k.sign(t, doc, signOpts{})), nil)
	if want := "attestation rejected: document names region us-east-1 but is signed with the AWS eu-west-1 certificate"; err == nil || err.Error() != want {
		t.Fatalf("err = %v, want %s", err, want)
	}
}

func TestNewServerConfig(t *testing.T) {
	cases := []struct {
		name string
		cfg  ServerConfig
		want string
	}{
		{"no trust domain", ServerConfig{AllowReattestation: true}, "awsiid: trust domain is required"},
		{"no replay lookup", ServerConfig{TrustDomain: td}, "awsiid: the already-attested lookup is required unless re-attestation is allowed"},
		{"bad account", ServerConfig{TrustDomain: td, AllowReattestation: true, Accounts: []string{"12345"}}, `awsiid: account ID "12345" is not 12 digits`},
		{"bad region", ServerConfig{TrustDomain: td, AllowReattestation: true, Regions: []string{"US-EAST-1"}}, `awsiid: region "US-EAST-1" is malformed`},
		{"negative age", ServerConfig{TrustDomain: td, AllowReattestation: true, MaxInstanceAge: -time.Second}, "awsiid: max instance age -1s is negative"},
		{"nil cert", ServerConfig{TrustDomain: td, AllowReattestation: true, Certs: []*x509.Certificate{nil}}, "awsiid: configured certificate 0 is nil"},
		{"IAM without EC2", ServerConfig{TrustDomain: td, AllowReattestation: true, IAM: func(context.Context, string) (IAMAPI, error) { return nil, nil }}, "awsiid: the IAM lookup needs the EC2 lookup"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewServer(tc.cfg); err == nil || err.Error() != tc.want {
				t.Fatalf("err = %v, want %s", err, tc.want)
			}
		})
	}
}
