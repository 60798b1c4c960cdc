package azuremsi_test

import (
	"context"
	"crypto"
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
	"github.com/plinth-id/plinth/attestors/azuremsi"
	"github.com/plinth-id/plinth/simulator"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

const (
	tenant       = "8a0c4f2e-3b5d-4e6f-9a1b-2c3d4e5f6a7b"
	tenant2      = "0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e"
	principal    = "1f2e3d4c-5b6a-4789-8abc-def012345678"
	subscription = "6d5c4b3a-2918-4706-a5b4-c3d2e1f0a9b8"
	wantID       = "spiffe://example.org/spire/agent/azure_msi/" + tenant + "/" + principal
)

var (
	quiet = slog.New(slog.DiscardHandler)
	td    = spiffeid.RequireTrustDomainFromString("example.org")
	now   = time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC)
	ident = simulator.AzureIdentity{
		TenantID: tenant, PrincipalID: principal, ClientID: "0d9c8b7a-6f5e-4d3c-b2a1-0f9e8d7c6b5a",
		SubscriptionID: subscription, ResourceGroup: "plinth-rg", VMName: "node-1",
	}
)

func newSim(t testing.TB, id simulator.AzureIdentity) *simulator.AzureMetadata {
	t.Helper()
	sim, err := simulator.NewAzureMetadata(id)
	if err != nil {
		t.Fatal(err)
	}
	sim.SetClock(func() time.Time { return now })
	t.Cleanup(sim.Close)
	return sim
}

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

func staticKeys(t testing.TB, sim *simulator.AzureMetadata) azuremsi.KeySource {
	t.Helper()
	k, err := azuremsi.ParseJWKS(sim.JWKS())
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// newServer returns a server that allows tenant with sim's keys (from its
// JWKS, as configured keys) and nothing else, at time now.
func newServer(t testing.TB, sim *simulator.AzureMetadata, mod func(*azuremsi.ServerConfig)) (*azuremsi.Server, *attestedSet) {
	t.Helper()
	a := &attestedSet{}
	c := azuremsi.ServerConfig{
		TrustDomain: td,
		Tenants:     map[string]azuremsi.TenantConfig{tenant: {Keys: staticKeys(t, sim)}},
		Attested:    a.attested,
		Clock:       func() time.Time { return now },
		Logger:      quiet,
	}
	if mod != nil {
		mod(&c)
	}
	s, err := azuremsi.NewServer(c)
	if err != nil {
		t.Fatal(err)
	}
	return s, a
}

func payload(t testing.TB, tok string) []byte {
	t.Helper()
	b, err := json.Marshal(azuremsi.Payload{V: 1, Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func noChallenge(context.Context, []byte) ([]byte, error) {
	return nil, errors.New("azure_msi must not send a challenge")
}

func sign(t testing.TB, alg jose.SignatureAlgorithm, key any, kid string, claims any) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(claims)
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

func selectors(res *attestors.Result) []string {
	var ss []string
	for _, s := range res.Selectors {
		ss = append(ss, s.String())
	}
	return ss
}

func TestAttestThroughTheFakeIMDS(t *testing.T) {
	sim := newSim(t, ident)
	s, _ := newServer(t, sim, nil)
	agent, err := azuremsi.NewAgent(azuremsi.AgentConfig{MetadataURL: sim.URL()})
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
	want := []string{
		"azure_msi:principal-id:" + principal,
		"azure_msi:resource-group:plinth-rg",
		"azure_msi:subscription-id:" + subscription,
		"azure_msi:tenant-id:" + tenant,
		"azure_msi:virtual-machine:node-1",
		"azure_msi:vm-name:plinth-rg:node-1",
	}
	if got := selectors(res); !slices.Equal(got, want) {
		t.Errorf("selectors = %q\nwant %q", got, want)
	}
	if res.CanReattest {
		t.Error("CanReattest without AllowReattestation")
	}
	wantEvidence := map[string]string{
		"tenant_id": tenant, "principal_id": principal, "client_id": "0d9c8b7a-6f5e-4d3c-b2a1-0f9e8d7c6b5a",
		"xms_mirid":    "/subscriptions/" + subscription + "/resourcegroups/plinth-rg/providers/Microsoft.Compute/virtualMachines/node-1",
		"token_issued": "2026-11-03T10:00:00Z", "key_id": sim.KeyID(),
	}
	for k, v := range wantEvidence {
		if res.Evidence[k] != v {
			t.Errorf("evidence %s = %q, want %q", k, res.Evidence[k], v)
		}
	}
}

func TestAttestAcceptsSPIREAgentPayload(t *testing.T) {
	sim := newSim(t, ident)
	s, _ := newServer(t, sim, nil)
	tok, err := sim.Token(azuremsi.DefaultResource)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := json.Marshal(map[string]string{"token": tok}) // SPIRE's MSIAttestationData
	res, err := s.Attest(t.Context(), p, noChallenge)
	if err != nil || res.AgentID.String() != wantID {
		t.Fatalf("Attest = %v, %v", res, err)
	}
}

func TestResourceSelectors(t *testing.T) {
	tests := []struct {
		mirid string
		want  []string
	}{
		{"/subscriptions/s/resourcegroups/rg/providers/Microsoft.Compute/virtualMachines/vm",
			[]string{"azure_msi:virtual-machine:vm", "azure_msi:vm-name:rg:vm", "azure_msi:subscription-id:s", "azure_msi:resource-group:rg"}},
		{"/subscriptions/s/resourceGroups/RG/providers/microsoft.compute/virtualmachines/vm",
			[]string{"azure_msi:virtual-machine:vm", "azure_msi:vm-name:RG:vm", "azure_msi:subscription-id:s", "azure_msi:resource-group:RG"}},
		{"/subscriptions/s/resourcegroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/pool",
			[]string{"azure_msi:virtual-machine-scale-set:pool", "azure_msi:subscription-id:s", "azure_msi:resource-group:rg"}},
		{"/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id", nil},
		{"/subscriptions/s/resourcegroups/rg/providers/Microsoft.Compute/virtualMachines/vm/extra", nil},
		{"/subscriptions//resourcegroups/rg/providers/Microsoft.Compute/virtualMachines/vm", nil},
		{"subscriptions/s/resourcegroups/rg/providers/Microsoft.Compute/virtualMachines/vm/", nil},
		{"", nil},
	}
	for _, tt := range tests {
		var got []string
		for _, s := range azuremsi.ResourceSelectors(tt.mirid) {
			got = append(got, s.String())
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("ResourceSelectors(%q) = %q, want %q", tt.mirid, got, tt.want)
		}
	}
}

func TestAttestRejects(t *testing.T) {
	sim := newSim(t, ident)
	other := newSim(t, ident) // same tenant and principal, a key the server does not trust
	id2 := ident
	id2.TenantID = tenant2
	sim2 := newSim(t, id2) // another allowed tenant, with its own keys
	good := func(edit func(map[string]any)) func(t *testing.T) string {
		return func(t *testing.T) string {
			c := sim.Claims(azuremsi.DefaultResource, now)
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
	claims := sim.Claims(azuremsi.DefaultResource, now)
	kid := sim.KeyID()
	bothTenants := func(c *azuremsi.ServerConfig) {
		c.Tenants[tenant2] = azuremsi.TenantConfig{Keys: staticKeys(t, sim2)}
	}
	sharedKeys := func(c *azuremsi.ServerConfig) {
		c.Tenants[tenant2] = azuremsi.TenantConfig{Keys: staticKeys(t, sim)}
	}

	tests := []struct {
		name    string
		token   func(t *testing.T) string
		payload []byte
		mod     func(*azuremsi.ServerConfig)
		want    string
	}{
		{name: "untrusted key", token: func(t *testing.T) string {
			tok, err := other.Token(azuremsi.DefaultResource)
			if err != nil {
				t.Fatal(err)
			}
			return tok
		}, want: fmt.Sprintf("token is signed by key %q, which is not a key of tenant %s", other.KeyID(), tenant)},
		{name: "untrusted key with a trusted key ID", token: func(t *testing.T) string {
			return sign(t, jose.RS256, rogue, kid, claims)
		}, want: fmt.Sprintf("token signature does not verify with key %q of tenant %s", kid, tenant)},
		{name: "tampered principal", token: func(t *testing.T) string {
			return tamper(t, good(nil)(t), func(c map[string]any) {
				c["sub"], c["oid"] = "00000000-0000-4000-8000-000000000000", "00000000-0000-4000-8000-000000000000"
			})
		}, want: fmt.Sprintf("token signature does not verify with key %q of tenant %s", kid, tenant)},
		{name: "tampered VM", token: func(t *testing.T) string {
			return tamper(t, good(nil)(t), func(c map[string]any) {
				c["xms_mirid"] = "/subscriptions/" + subscription + "/resourcegroups/prod/providers/Microsoft.Compute/virtualMachines/db-1"
			})
		}, want: fmt.Sprintf("token signature does not verify with key %q of tenant %s", kid, tenant)},
		{name: "token of one tenant signed by another tenant's key", mod: bothTenants, token: func(t *testing.T) string {
			c := sim2.Claims(azuremsi.DefaultResource, now)
			c["tid"] = tenant2
			return sign(t, jose.RS256, rogue, kid, c) // names tenant 1's key ID
		}, want: fmt.Sprintf("token is signed by key %q, which is not a key of tenant %s", kid, tenant2)},
		{name: "tenant moved to another allowed tenant with the same keys", mod: sharedKeys, token: func(t *testing.T) string {
			return tamper(t, good(nil)(t), func(c map[string]any) { c["tid"] = tenant2 })
		}, want: fmt.Sprintf("token signature does not verify with key %q of tenant %s", kid, tenant2)},
		{name: "tenant not allowed", token: func(t *testing.T) string {
			tok, err := sim2.Token(azuremsi.DefaultResource)
			if err != nil {
				t.Fatal(err)
			}
			return tok
		}, want: fmt.Sprintf("tenant %q is not allowed", tenant2)},
		{name: "no tenant", token: good(func(c map[string]any) { delete(c, "tid") }), want: "token has no tenant ID (tid)"},
		{name: "issuer of another tenant", mod: sharedKeys, token: good(func(c map[string]any) { c["iss"] = "https://sts.windows.net/" + tenant2 + "/" }),
			want: fmt.Sprintf(`token issuer is "https://sts.windows.net/%s/", want "https://sts.windows.net/%[2]s/" (or "https://login.microsoftonline.com/%[2]s/v2.0")`, tenant2, tenant)},
		{name: "wrong audience", token: func(t *testing.T) string {
			tok, err := sim.Token("https://vault.azure.net")
			if err != nil {
				t.Fatal(err)
			}
			return tok
		}, want: `token audience is "https://vault.azure.net", want "https://management.azure.com/"`},
		{name: "audience of the tenant", token: good(nil),
			mod: func(c *azuremsi.ServerConfig) {
				c.Tenants[tenant] = azuremsi.TenantConfig{Keys: staticKeys(t, sim), Resource: "api://plinth"}
			},
			want: `token audience is "https://management.azure.com/", want "api://plinth"`},
		{name: "expired", token: good(func(c map[string]any) {
			c["iat"], c["nbf"], c["exp"] = now.Add(-25*time.Hour).Unix(), now.Add(-25*time.Hour).Unix(), now.Add(-time.Hour).Unix()
		}),
			want: "token expired at 2026-11-03T09:00:00Z (now 2026-11-03T10:00:00Z)"},
		{name: "not yet valid", token: good(func(c map[string]any) { c["nbf"] = now.Add(5 * time.Minute).Unix() }),
			want: "token is not valid before 2026-11-03T10:05:00Z (now 2026-11-03T10:00:00Z)"},
		{name: "issued in the future", token: good(func(c map[string]any) { c["iat"] = now.Add(5 * time.Minute).Unix() }),
			want: "token is issued in the future, at 2026-11-03T10:05:00Z (now 2026-11-03T10:00:00Z)"},
		{name: "no expiry", token: good(func(c map[string]any) { delete(c, "exp") }), want: "token has no expiry (exp)"},
		{name: "no principal", token: good(func(c map[string]any) { delete(c, "sub"); delete(c, "oid") }), want: "token has no principal ID (sub or oid)"},
		{name: "user token", token: good(func(c map[string]any) { c["sub"] = "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ" }),
			want: `token subject "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ" differs from its object ID "` + principal + `": not a managed identity token`},
		{name: "user identity type", token: good(func(c map[string]any) { c["idtyp"] = "user" }),
			want: `token identity type is "user", not app: not a managed identity token`},
		{name: "key embedded in the header", token: func(t *testing.T) string {
			return signRaw(t, map[string]any{"alg": "RS256", "kid": "rogue", "jwk": publicJWK(t, rogue, "rogue")}, claims, rogue)
		}, want: `token is signed by key "rogue", which is not a key of tenant ` + tenant},
		{name: "key embedded in the header with a trusted key ID", token: func(t *testing.T) string {
			return signRaw(t, map[string]any{"alg": "RS256", "kid": kid, "x5t": kid, "jwk": publicJWK(t, rogue, kid), "jku": "https://evil.example/keys"}, claims, rogue)
		}, want: fmt.Sprintf("token signature does not verify with key %q of tenant %s", kid, tenant)},
		{name: "alg none", token: func(t *testing.T) string {
			return b64(map[string]string{"alg": "none", "kid": kid, "typ": "JWT"}) + "." + b64(claims) + "."
		}, want: `token is signed with "none"; only RS256 is accepted`},
		{name: "HS256 with the public key as secret", token: func(t *testing.T) string {
			return sign(t, jose.HS256, sim.JWKS(), kid, claims)
		}, want: `token is signed with "HS256"; only RS256 is accepted`},
		{name: "RS512", token: func(t *testing.T) string { return sign(t, jose.RS512, rogue, kid, claims) },
			want: `token is signed with "RS512"; only RS256 is accepted`},
		{name: "no key ID", token: func(t *testing.T) string { return sign(t, jose.RS256, rogue, "", claims) },
			want: "token has no key ID (kid)"},
		{name: "claims not JSON", token: func(t *testing.T) string {
			return b64(map[string]string{"alg": "RS256", "kid": kid}) + "." + base64.RawURLEncoding.EncodeToString([]byte("[1,2")) + ".c2ln"
		}, want: "token claims are malformed: unexpected end of JSON input"},
		{name: "empty payload", payload: []byte{}, want: "payload is empty"},
		{name: "other version", payload: []byte(`{"v":2,"token":"x"}`), want: "payload version 2 is not supported (want 1)"},
		{name: "unknown field", payload: []byte(`{"v":1,"token":"x","x5c":[]}`), want: `malformed payload: json: unknown field "x5c"`},
		{name: "trailing data", payload: []byte(`{"token":"x"}{}`), want: "malformed payload: trailing data"},
		{name: "no token", payload: []byte(`{"v":1}`), want: "payload has no token"},
		{name: "bare token", payload: []byte("eyJhbGciOiJSUzI1NiJ9.e30.c2ln"), want: "malformed payload: invalid character 'e' looking for beginning of value"},
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

func TestAttestAccepts(t *testing.T) {
	sim := newSim(t, ident)
	tests := []struct {
		name string
		edit func(map[string]any)
		mod  func(*azuremsi.ServerConfig)
		want []string
	}{
		{name: "v2 issuer", edit: func(c map[string]any) { c["iss"] = "https://login.microsoftonline.com/" + tenant + "/v2.0" }},
		{name: "oid only", edit: func(c map[string]any) { delete(c, "sub") }},
		{name: "sub only, no idtyp", edit: func(c map[string]any) { delete(c, "oid"); delete(c, "idtyp") }},
		{name: "tenant audience", edit: func(c map[string]any) { c["aud"] = "api://plinth" },
			mod: func(c *azuremsi.ServerConfig) {
				c.Tenants[tenant] = azuremsi.TenantConfig{Keys: staticKeys(t, sim), Resource: "api://plinth"}
			}},
		{name: "server audience", edit: func(c map[string]any) { c["aud"] = "api://plinth" },
			mod: func(c *azuremsi.ServerConfig) { c.Resource = "api://plinth" }},
		{name: "tenant in capitals in the config", mod: func(c *azuremsi.ServerConfig) {
			c.Tenants = map[string]azuremsi.TenantConfig{strings.ToUpper(tenant): {Keys: staticKeys(t, sim)}}
		}},
		{name: "expired within the leeway", edit: func(c map[string]any) { c["exp"] = now.Add(-59 * time.Second).Unix() }},
		{name: "user-assigned identity", edit: func(c map[string]any) {
			c["xms_mirid"] = "/subscriptions/" + subscription + "/resourcegroups/ids/providers/Microsoft.ManagedIdentity/userAssignedIdentities/plinth-agents"
		}, want: []string{"azure_msi:principal-id:" + principal, "azure_msi:tenant-id:" + tenant}},
		{name: "no xms_mirid", edit: func(c map[string]any) { delete(c, "xms_mirid") },
			want: []string{"azure_msi:principal-id:" + principal, "azure_msi:tenant-id:" + tenant}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newServer(t, sim, tt.mod)
			c := sim.Claims(azuremsi.DefaultResource, now)
			if tt.edit != nil {
				tt.edit(c)
			}
			tok, err := sim.SignClaims(c)
			if err != nil {
				t.Fatal(err)
			}
			res, err := s.Attest(t.Context(), payload(t, tok), noChallenge)
			if err != nil {
				t.Fatal(err)
			}
			if res.AgentID.String() != wantID {
				t.Errorf("agent ID = %s", res.AgentID)
			}
			if tt.want != nil && !slices.Equal(selectors(res), tt.want) {
				t.Errorf("selectors = %q, want %q", selectors(res), tt.want)
			}
		})
	}
}

func TestAttestRefusesReplay(t *testing.T) {
	sim := newSim(t, ident)
	tok, err := sim.Token(azuremsi.DefaultResource)
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
	want := "attestation rejected: principal " + principal + " of tenant " + tenant + " has already attested as " + wantID +
		" and re-attestation is not allowed (a replayed token?)"
	if !errors.Is(err, attestors.ErrRejected) || err.Error() != want {
		t.Fatalf("replay: Attest = %v\nwant %q", err, want)
	}

	s, attested = newServer(t, sim, func(c *azuremsi.ServerConfig) { c.AllowReattestation = true })
	attested.add(id)
	res, err := s.Attest(t.Context(), payload(t, tok), noChallenge)
	if err != nil || !res.CanReattest {
		t.Fatalf("Attest with re-attestation = %+v, %v", res, err)
	}

	s, attested = newServer(t, sim, nil)
	attested.err = errors.New("database is down")
	_, err = s.Attest(t.Context(), payload(t, tok), noChallenge)
	if err == nil || errors.Is(err, attestors.ErrRejected) || err.Error() != "azuremsi: could not look up agent "+wantID+": database is down" {
		t.Fatalf("Attest with a failing lookup = %v", err)
	}
}

func TestNewServerValidates(t *testing.T) {
	attested := func(context.Context, spiffeid.ID) (bool, error) { return false, nil }
	one := map[string]azuremsi.TenantConfig{tenant: {}}
	tests := []struct {
		name string
		c    azuremsi.ServerConfig
		want string
	}{
		{"no trust domain", azuremsi.ServerConfig{Tenants: one, Attested: attested}, "azuremsi: trust domain is required"},
		{"no tenant", azuremsi.ServerConfig{TrustDomain: td, Attested: attested}, "azuremsi: at least one tenant is required"},
		{"no replay lookup", azuremsi.ServerConfig{TrustDomain: td, Tenants: one}, "azuremsi: refusing replays needs the attested-agent lookup; provide Attested or allow re-attestation"},
		{"tenant by domain", azuremsi.ServerConfig{TrustDomain: td, Tenants: map[string]azuremsi.TenantConfig{"contoso.onmicrosoft.com": {}}, Attested: attested},
			`azuremsi: tenant "contoso.onmicrosoft.com" is not a tenant ID (a GUID); tokens name their tenant by ID, never by domain`},
		{"tenant twice", azuremsi.ServerConfig{TrustDomain: td, Tenants: map[string]azuremsi.TenantConfig{tenant: {}, strings.ToUpper(tenant): {}}, Attested: attested},
			"azuremsi: tenant " + tenant + " is configured twice"},
		{"bad keys URL", azuremsi.ServerConfig{TrustDomain: td, Tenants: map[string]azuremsi.TenantConfig{tenant: {KeysURL: "ftp://x"}}, Attested: attested},
			"azuremsi: tenant " + tenant + `: jwks: key set URL "ftp://x" is not an http(s) URL`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.c.Logger = quiet
			if _, err := azuremsi.NewServer(tt.c); err == nil || err.Error() != tt.want {
				t.Fatalf("NewServer = %v, want %q", err, tt.want)
			}
		})
	}
	if got, want := azuremsi.KeysURL(tenant), "https://login.microsoftonline.com/"+tenant+"/discovery/v2.0/keys"; got != want {
		t.Errorf("KeysURL = %s, want %s", got, want)
	}
}
