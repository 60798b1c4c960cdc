package gcpiit_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/plinth-id/plinth/attestors"
	"github.com/plinth-id/plinth/attestors/gcpiit"
	"github.com/plinth-id/plinth/simulator"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var (
	quiet = slog.New(slog.DiscardHandler)
	td    = spiffeid.RequireTrustDomainFromString("example.org")
	now   = time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC)
	inst  = simulator.GCPInstance{
		ProjectID:     "plinth-prod",
		ProjectNumber: 123456789012,
		Zone:          "europe-west1-b",
		InstanceID:    "4528923497298347234",
		InstanceName:  "node-1",
		Created:       time.Date(2026, 10, 1, 8, 0, 0, 0, time.UTC),
	}
	wantID = "spiffe://example.org/spire/agent/gcp_iit/plinth-prod/4528923497298347234"
)

// newSim starts a fake metadata server whose tokens are issued at now.
func newSim(t testing.TB) *simulator.GCPMetadata {
	t.Helper()
	sim, err := simulator.NewGCPMetadata(inst)
	if err != nil {
		t.Fatal(err)
	}
	sim.SetClock(func() time.Time { return now })
	t.Cleanup(sim.Close)
	return sim
}

// attestedSet is a fake datastore of attested agents.
type attestedSet struct {
	mu  sync.Mutex
	ids map[spiffeid.ID]bool
	err error
}

func (a *attestedSet) attested(_ context.Context, id spiffeid.ID) (bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.ids[id], a.err
}

func (a *attestedSet) add(id spiffeid.ID) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ids == nil {
		a.ids = map[spiffeid.ID]bool{}
	}
	a.ids[id] = true
}

// newServer returns a server that trusts sim's keys (from its JWKS, as a
// configured key file) and nothing else, at time now.
func newServer(t testing.TB, sim *simulator.GCPMetadata, mod func(*gcpiit.ServerConfig)) (*gcpiit.Server, *attestedSet) {
	t.Helper()
	keys, err := gcpiit.ParseJWKS(sim.JWKS())
	if err != nil {
		t.Fatal(err)
	}
	a := &attestedSet{}
	c := gcpiit.ServerConfig{
		TrustDomain: td,
		Keys:        keys,
		ProjectIDs:  []string{"plinth-prod", "plinth-dev"},
		Attested:    a.attested,
		Clock:       func() time.Time { return now },
		Logger:      quiet,
	}
	if mod != nil {
		mod(&c)
	}
	s, err := gcpiit.NewServer(c)
	if err != nil {
		t.Fatal(err)
	}
	return s, a
}

func payload(t testing.TB, tok string) []byte {
	t.Helper()
	b, err := json.Marshal(gcpiit.Payload{V: 1, Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func noChallenge(context.Context, []byte) ([]byte, error) {
	return nil, errors.New("gcp_iit must not send a challenge")
}

// sign signs claims with key under alg, with the given kid (none if empty).
func sign(t testing.TB, alg jose.SignatureAlgorithm, key any, kid string, claims any) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := signer.Sign(b)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// signRaw signs claims with key (RS256) under exactly the given header.
func signRaw(t testing.TB, header map[string]any, claims any, key *rsa.PrivateKey) string {
	t.Helper()
	input := b64(header) + "." + b64(claims)
	digest := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// publicJWK is key's public half as a JWK object.
func publicJWK(t testing.TB, key *rsa.PrivateKey, kid string) map[string]any {
	t.Helper()
	b, err := jose.JSONWebKey{Key: key.Public(), KeyID: kid}.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	json.Unmarshal(b, &m)
	return m
}

func b64(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

// tamper replaces the claims of a signed token and keeps its signature.
func tamper(t testing.TB, tok string, edit func(map[string]any)) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	edit(c)
	parts[1] = b64(c)
	return strings.Join(parts, ".")
}

func computeEngine(c map[string]any) map[string]any {
	return c["google"].(map[string]any)["compute_engine"].(map[string]any)
}

func TestAttestThroughTheFakeMetadataServer(t *testing.T) {
	sim := newSim(t)
	s, _ := newServer(t, sim, nil)
	agent, err := gcpiit.NewAgent(gcpiit.AgentConfig{MetadataURL: sim.URL()})
	if err != nil {
		t.Fatal(err)
	}
	p, err := agent.Payload(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.Attest(t.Context(), p, noChallenge)
	if err != nil {
		t.Fatal(err)
	}
	if res.AgentID.String() != wantID {
		t.Errorf("agent ID = %s, want %s", res.AgentID, wantID)
	}
	var sels []string
	for _, s := range res.Selectors {
		sels = append(sels, s.String())
	}
	want := []string{
		"gcp_iit:instance-id:4528923497298347234",
		"gcp_iit:instance-name:node-1",
		"gcp_iit:project-id:plinth-prod",
		"gcp_iit:project-number:123456789012",
		"gcp_iit:sa:123456789012-compute@developer.gserviceaccount.com",
		"gcp_iit:zone:europe-west1-b",
	}
	if !slices.Equal(sels, want) {
		t.Errorf("selectors = %q, want %q", sels, want)
	}
	if res.CanReattest {
		t.Error("CanReattest without AllowReattestation")
	}
	wantEvidence := map[string]string{
		"project_id": "plinth-prod", "project_number": "123456789012", "zone": "europe-west1-b",
		"instance_id": "4528923497298347234", "instance_name": "node-1",
		"instance_created": "2026-10-01T08:00:00Z", "token_issued": "2026-11-03T10:00:00Z", "key_id": sim.KeyID(),
	}
	for k, v := range wantEvidence {
		if res.Evidence[k] != v {
			t.Errorf("evidence %s = %q, want %q", k, res.Evidence[k], v)
		}
	}
	if n, _ := sim.Requests(); n != 1 {
		t.Errorf("the agent asked the metadata server %d times, want 1", n)
	}
}

func TestAttestAcceptsSPIREAgentPayload(t *testing.T) {
	sim := newSim(t)
	s, _ := newServer(t, sim, nil)
	tok, err := sim.Token(gcpiit.DefaultAudience)
	if err != nil {
		t.Fatal(err)
	}
	// SPIRE's agent sends the bare token.
	res, err := s.Attest(t.Context(), []byte(tok), noChallenge)
	if err != nil {
		t.Fatal(err)
	}
	if res.AgentID.String() != wantID {
		t.Errorf("agent ID = %s", res.AgentID)
	}
}

func TestAttestRejects(t *testing.T) {
	sim := newSim(t)
	other := newSim(t) // a metadata server with a key the server does not trust
	good := func(edit func(map[string]any)) func(t *testing.T) string {
		return func(t *testing.T) string {
			c := sim.Claims(gcpiit.DefaultAudience, now)
			if edit != nil {
				edit(c)
			}
			tok, err := sim.SignClaims(c)
			if err != nil {
				t.Fatal(err)
			}
			return tok
		}
	}
	rogue, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	claims := sim.Claims(gcpiit.DefaultAudience, now)
	kid := sim.KeyID()

	tests := []struct {
		name    string
		token   func(t *testing.T) string
		payload []byte // instead of a token
		mod     func(*gcpiit.ServerConfig)
		want    string
	}{
		{name: "untrusted key", token: func(t *testing.T) string {
			tok, err := other.Token(gcpiit.DefaultAudience)
			if err != nil {
				t.Fatal(err)
			}
			return tok
		}, want: fmt.Sprintf("identity token is signed by key %q, which is not a trusted key", other.KeyID())},
		{name: "untrusted key with a trusted key ID", token: func(t *testing.T) string {
			return sign(t, jose.RS256, rogue, kid, claims)
		}, want: fmt.Sprintf("identity token signature does not verify with key %q", kid)},
		{name: "tampered instance ID", token: func(t *testing.T) string {
			return tamper(t, good(nil)(t), func(c map[string]any) { computeEngine(c)["instance_id"] = "1" })
		}, want: fmt.Sprintf("identity token signature does not verify with key %q", kid)},
		{name: "tampered project", token: func(t *testing.T) string {
			return tamper(t, good(nil)(t), func(c map[string]any) { computeEngine(c)["project_id"] = "plinth-dev" })
		}, want: fmt.Sprintf("identity token signature does not verify with key %q", kid)},
		{name: "wrong audience", token: func(t *testing.T) string {
			tok, err := sim.Token("https://attacker.example")
			if err != nil {
				t.Fatal(err)
			}
			return tok
		}, want: `identity token audience is "https://attacker.example", want "spire-gcp-node-attestor"`},
		{name: "two audiences", token: good(func(c map[string]any) { c["aud"] = []string{"spire-gcp-node-attestor", "other"} }),
			want: `identity token audience is "spire-gcp-node-attestor", "other", want "spire-gcp-node-attestor"`},
		{name: "audience of another server", token: good(nil), mod: func(c *gcpiit.ServerConfig) { c.Audience = "plinth-eu" },
			want: `identity token audience is "spire-gcp-node-attestor", want "plinth-eu"`},
		{name: "expired", token: good(func(c map[string]any) {
			c["iat"], c["exp"] = now.Add(-2*time.Hour).Unix(), now.Add(-time.Hour).Unix()
		}), want: "identity token expired at 2026-11-03T09:00:00Z (now 2026-11-03T10:00:00Z)"},
		{name: "expired beyond the leeway", token: good(func(c map[string]any) {
			c["iat"], c["exp"] = now.Add(-2*time.Hour).Unix(), now.Add(-61*time.Second).Unix()
		}), want: "identity token expired at 2026-11-03T09:58:59Z (now 2026-11-03T10:00:00Z)"},
		{name: "not yet valid", token: good(func(c map[string]any) { c["nbf"] = now.Add(5 * time.Minute).Unix() }),
			want: "identity token is not valid before 2026-11-03T10:05:00Z (now 2026-11-03T10:00:00Z)"},
		{name: "issued in the future", token: good(func(c map[string]any) {
			c["iat"], c["exp"] = now.Add(10*time.Minute).Unix(), now.Add(70*time.Minute).Unix()
		}), want: "identity token is issued in the future, at 2026-11-03T10:10:00Z (now 2026-11-03T10:00:00Z)"},
		{name: "no expiry", token: good(func(c map[string]any) { delete(c, "exp") }), want: "identity token has no expiry (exp)"},
		{name: "no issue time", token: good(func(c map[string]any) { delete(c, "iat") }), want: "identity token has no issue time (iat)"},
		{name: "too old", token: good(func(c map[string]any) { c["iat"] = now.Add(-20 * time.Minute).Unix() }),
			mod:  func(c *gcpiit.ServerConfig) { c.MaxAge = 10 * time.Minute },
			want: "identity token was issued at 2026-11-03T09:40:00Z, more than 10m0s ago (now 2026-11-03T10:00:00Z)"},
		{name: "wrong issuer", token: good(func(c map[string]any) { c["iss"] = "https://evil.example" }),
			want: `identity token issuer is "https://evil.example", want "https://accounts.google.com"`},
		{name: "project not allowed", token: good(func(c map[string]any) { computeEngine(c)["project_id"] = "someone-else" }),
			want: `project "someone-else" is not in the allowed project IDs`},
		{name: "no compute_engine", token: good(func(c map[string]any) { delete(c, "google") }),
			want: "identity token has no google.compute_engine claims (request it with format=full)"},
		{name: "no instance ID", token: good(func(c map[string]any) { delete(computeEngine(c), "instance_id") }),
			want: "identity token has no google.compute_engine.instance_id claim"},
		{name: "no zone", token: good(func(c map[string]any) { delete(computeEngine(c), "zone") }),
			want: "identity token has no google.compute_engine.zone claim"},
		{name: "no creation time", token: good(func(c map[string]any) { delete(computeEngine(c), "instance_creation_timestamp") }),
			want: "identity token has no google.compute_engine.instance_creation_timestamp claim"},
		{name: "instance ID not a path segment", token: good(func(c map[string]any) { computeEngine(c)["instance_id"] = "../x" }),
			want: "identity token: project ID or instance ID cannot form an agent ID: path segment characters are limited to letters, numbers, dots, dashes, and underscores"},
		{name: "key embedded in the header", token: func(t *testing.T) string {
			return signRaw(t, map[string]any{"alg": "RS256", "kid": "rogue", "jwk": publicJWK(t, rogue, "rogue")}, claims, rogue)
		}, want: `identity token is signed by key "rogue", which is not a trusted key`},
		{name: "key embedded in the header with a trusted key ID", token: func(t *testing.T) string {
			return signRaw(t, map[string]any{"alg": "RS256", "kid": kid, "jwk": publicJWK(t, rogue, kid), "jku": "https://evil.example/certs"}, claims, rogue)
		}, want: fmt.Sprintf("identity token signature does not verify with key %q", kid)},
		{name: "long key ID", token: func(t *testing.T) string {
			return signRaw(t, map[string]any{"alg": "RS256", "kid": strings.Repeat("k", 1000)}, claims, rogue)
		}, want: `identity token is signed by key "` + strings.Repeat("k", 64) + `…", which is not a trusted key`},
		{name: "alg none", token: func(t *testing.T) string {
			return b64(map[string]string{"alg": "none", "kid": kid, "typ": "JWT"}) + "." + b64(claims) + "."
		}, want: `identity token is signed with "none"; only RS256 is accepted`},
		{name: "HS256 with the public key as secret", token: func(t *testing.T) string {
			return sign(t, jose.HS256, []byte(sim.JWKS()), kid, claims)
		}, want: `identity token is signed with "HS256"; only RS256 is accepted`},
		{name: "PS256", token: func(t *testing.T) string { return sign(t, jose.PS256, rogue, kid, claims) },
			want: `identity token is signed with "PS256"; only RS256 is accepted`},
		{name: "ES256", token: func(t *testing.T) string { return sign(t, jose.ES256, ec, kid, claims) },
			want: `identity token is signed with "ES256"; only RS256 is accepted`},
		{name: "no key ID", token: func(t *testing.T) string { return sign(t, jose.RS256, rogue, "", claims) },
			want: "identity token has no key ID (kid)"},
		{name: "not a JWT", token: func(*testing.T) string { return "hello" },
			want: "identity token is malformed: go-jose/go-jose: compact JWS format must have three parts"},
		{name: "empty payload", payload: []byte{}, want: "payload is empty"},
		{name: "other version", payload: []byte(`{"v":2,"token":"x"}`), want: "payload version 2 is not supported (want 1)"},
		{name: "unknown field", payload: []byte(`{"v":1,"token":"x","jwk":{}}`), want: `malformed payload: json: unknown field "jwk"`},
		{name: "trailing data", payload: []byte(`{"v":1,"token":"x"}{}`), want: "malformed payload: trailing data"},
		{name: "no token", payload: []byte(`{"v":1}`), want: "payload has no token"},
		{name: "huge", payload: make([]byte, 70000), want: "payload of 70000 bytes is larger than 65536"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newServer(t, sim, tt.mod)
			p := tt.payload
			if tt.token != nil {
				p = payload(t, tt.token(t))
			}
			res, err := s.Attest(t.Context(), p, noChallenge)
			if !errors.Is(err, attestors.ErrRejected) || err.Error() != "attestation rejected: "+tt.want {
				t.Fatalf("Attest = %v, %v\nwant rejection %q", res, err, tt.want)
			}
		})
	}
}

func TestAttestAnyProjectWhenNoAllowList(t *testing.T) {
	sim := newSim(t)
	s, _ := newServer(t, sim, func(c *gcpiit.ServerConfig) { c.ProjectIDs = nil })
	c := sim.Claims(gcpiit.DefaultAudience, now)
	computeEngine(c)["project_id"] = "anyone"
	tok, err := sim.SignClaims(c)
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.Attest(t.Context(), payload(t, tok), noChallenge)
	if err != nil || res.AgentID.String() != "spiffe://example.org/spire/agent/gcp_iit/anyone/4528923497298347234" {
		t.Fatalf("Attest = %v, %v", res, err)
	}
}

func TestAttestLeeway(t *testing.T) {
	sim := newSim(t)
	s, _ := newServer(t, sim, nil)
	for _, c := range []map[string]any{
		// Expired 59 s ago, issued 59 s in the future, not valid for 59 s: all
		// within the minute of clock skew allowed.
		func() map[string]any {
			c := sim.Claims(gcpiit.DefaultAudience, now.Add(-time.Hour))
			c["exp"] = now.Add(-59 * time.Second).Unix()
			return c
		}(),
		sim.Claims(gcpiit.DefaultAudience, now.Add(59*time.Second)),
		func() map[string]any {
			c := sim.Claims(gcpiit.DefaultAudience, now)
			c["nbf"] = now.Add(59 * time.Second).Unix()
			return c
		}(),
	} {
		tok, err := sim.SignClaims(c)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Attest(t.Context(), payload(t, tok), noChallenge); err != nil {
			t.Errorf("Attest = %v", err)
		}
	}
}

func TestAttestRefusesReplay(t *testing.T) {
	sim := newSim(t)
	tok, err := sim.Token(gcpiit.DefaultAudience)
	if err != nil {
		t.Fatal(err)
	}
	id := spiffeid.RequireFromString(wantID)

	s, attested := newServer(t, sim, nil)
	if _, err := s.Attest(t.Context(), payload(t, tok), noChallenge); err != nil {
		t.Fatal(err)
	}
	attested.add(id)
	_, err = s.Attest(t.Context(), payload(t, tok), noChallenge)
	want := "attestation rejected: instance 4528923497298347234 of project plinth-prod has already attested as " + wantID +
		" and re-attestation is not allowed (a replayed identity token?)"
	if !errors.Is(err, attestors.ErrRejected) || err.Error() != want {
		t.Fatalf("replay: Attest = %v\nwant %q", err, want)
	}

	// With re-attestation allowed, the same instance attests again and its
	// agent may re-attest.
	s, attested = newServer(t, sim, func(c *gcpiit.ServerConfig) { c.AllowReattestation = true })
	attested.add(id)
	res, err := s.Attest(t.Context(), payload(t, tok), noChallenge)
	if err != nil || !res.CanReattest {
		t.Fatalf("Attest with re-attestation = %+v, %v", res, err)
	}

	// A failing lookup is an internal error, not a rejection.
	s, attested = newServer(t, sim, nil)
	attested.err = errors.New("database is down")
	_, err = s.Attest(t.Context(), payload(t, tok), noChallenge)
	if err == nil || errors.Is(err, attestors.ErrRejected) || err.Error() != "gcpiit: could not look up agent "+wantID+": database is down" {
		t.Fatalf("Attest with a failing lookup = %v", err)
	}
}

func TestNewServerValidates(t *testing.T) {
	keys := gcpiit.KeySources{}
	attested := func(context.Context, spiffeid.ID) (bool, error) { return false, nil }
	tests := []struct {
		name string
		c    gcpiit.ServerConfig
		want string
	}{
		{"no trust domain", gcpiit.ServerConfig{Keys: keys, Attested: attested}, "gcpiit: trust domain is required"},
		{"no replay lookup", gcpiit.ServerConfig{TrustDomain: td, Keys: keys}, "gcpiit: refusing replays needs the attested-agent lookup; provide Attested or allow re-attestation"},
		{"negative max age", gcpiit.ServerConfig{TrustDomain: td, Keys: keys, Attested: attested, MaxAge: -time.Second}, "gcpiit: max age -1s is negative"},
		{"empty project", gcpiit.ServerConfig{TrustDomain: td, Keys: keys, Attested: attested, ProjectIDs: []string{""}}, "gcpiit: empty project ID in the allowed project IDs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := gcpiit.NewServer(tt.c); err == nil || err.Error() != tt.want {
				t.Fatalf("NewServer = %v, want %q", err, tt.want)
			}
		})
	}
	// Without keys the server uses Google's, downloaded on first use.
	if _, err := gcpiit.NewServer(gcpiit.ServerConfig{TrustDomain: td, AllowReattestation: true, Logger: quiet}); err != nil {
		t.Fatal(err)
	}
}

// A token as Google's metadata server issues it (claims and header shaped as
// a real one, with license_id), signed by a test key whose JWKS sits beside
// it. Regenerate with `go test -run TestCapturedToken -update`.
func TestCapturedToken(t *testing.T) {
	if *update {
		writeCaptured(t)
	}
	keys, err := gcpiit.ParseJWKS(readFile(t, "testdata/jwks.json"))
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(string(readFile(t, "testdata/token.jwt")))
	s, err := gcpiit.NewServer(gcpiit.ServerConfig{
		TrustDomain: td, Keys: keys, ProjectIDs: []string{"acme-prod-4f2c"}, AllowReattestation: true, Logger: quiet,
		Clock: func() time.Time { return capturedAt.Add(time.Minute) },
	})
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.Attest(t.Context(), []byte(tok), noChallenge)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := res.AgentID.String(), "spiffe://example.org/spire/agent/gcp_iit/acme-prod-4f2c/8117354231958370115"; got != want {
		t.Errorf("agent ID = %s, want %s", got, want)
	}
	if len(res.Selectors) != 6 || res.Evidence["instance_created"] != "2026-06-17T09:21:44Z" {
		t.Errorf("result = %+v", res)
	}
	// An hour later it has expired.
	s, _ = gcpiit.NewServer(gcpiit.ServerConfig{
		TrustDomain: td, Keys: keys, AllowReattestation: true, Logger: quiet,
		Clock: func() time.Time { return capturedAt.Add(2 * time.Hour) },
	})
	if _, err := s.Attest(t.Context(), []byte(tok), noChallenge); !errors.Is(err, attestors.ErrRejected) {
		t.Fatalf("Attest later = %v, want expired", err)
	}
}
