package azuremsi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/plinth-id/plinth/attestors/internal/jwks"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/plinth-id/plinth/attestors"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

const (
	// Name is the attestation type on the wire.
	Name = "azure_msi"
	// DefaultResource is the resource (audience) SPIRE's agent asks for and
	// its server expects: Azure Resource Manager.
	DefaultResource = "https://management.azure.com/"
	// ClockSkew is the leeway allowed on exp, nbf and iat.
	ClockSkew = time.Minute
	// maxPayload bounds a payload; real tokens are 1.5–3 KiB.
	maxPayload = 64 << 10
)

// KeysURL is where Microsoft publishes the keys that sign tenant's tokens.
func KeysURL(tenant string) string {
	return "https://login.microsoftonline.com/" + url.PathEscape(tenant) + "/discovery/v2.0/keys"
}

// Payload is the agent's only message, JSON. A SPIRE agent sends
// {"token": …} without a version, which the server accepts too.
type Payload struct {
	V     int    `json:"v,omitempty"`
	Token string `json:"token"`
}

// Version is the payload version this package speaks.
const Version = 1

// TenantConfig is one allowed tenant.
type TenantConfig struct {
	// Resource, when set, is the audience this tenant's tokens must have
	// instead of ServerConfig.Resource (SPIRE's per-tenant resource_id).
	Resource string
	// Keys verify the tenant's tokens; default the keys published at
	// KeysURL (KeysURL(tenant) when empty), downloaded and cached.
	Keys    KeySource
	KeysURL string
}

// ServerConfig configures the server half.
type ServerConfig struct {
	TrustDomain spiffeid.TrustDomain
	// Resource the token must be for (its aud); default DefaultResource.
	Resource string
	// Tenants allowed to attest, by tenant ID (a GUID). Required: a token is
	// verified only with the keys of the tenant its tid claim names.
	Tenants map[string]TenantConfig
	// AllowReattestation lets a principal that already attested attest again
	// (and makes its agent re-attestable). Without it a second attestation
	// is refused, as in SPIRE.
	AllowReattestation bool
	// Attested reports whether an agent with this ID has attested before.
	// Required unless AllowReattestation.
	Attested func(ctx context.Context, agentID spiffeid.ID) (bool, error)
	// HTTPClient downloads tenant keys; default a client with a 10 s timeout.
	HTTPClient *http.Client
	Clock      func() time.Time
	Logger     *slog.Logger
}

type tenant struct {
	resource string
	keys     KeySource
}

// Server is the server half: it verifies the managed identity token with the
// keys of the tenant it names and turns it into the agent ID and selectors.
// It is safe for concurrent use.
type Server struct {
	c       ServerConfig
	tenants map[string]tenant
}

var reGUID = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// NewServer validates c. It does no I/O: tenant keys are downloaded on first
// use.
func NewServer(c ServerConfig) (*Server, error) {
	if c.TrustDomain.IsZero() {
		return nil, errors.New("azuremsi: trust domain is required")
	}
	if c.Resource == "" {
		c.Resource = DefaultResource
	}
	if len(c.Tenants) == 0 {
		return nil, errors.New("azuremsi: at least one tenant is required")
	}
	if c.Attested == nil && !c.AllowReattestation {
		return nil, errors.New("azuremsi: refusing replays needs the attested-agent lookup; provide Attested or allow re-attestation")
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	tenants := map[string]tenant{}
	for id, tc := range c.Tenants {
		lid := strings.ToLower(id)
		if !reGUID.MatchString(lid) {
			return nil, fmt.Errorf("azuremsi: tenant %q is not a tenant ID (a GUID); tokens name their tenant by ID, never by domain", id)
		}
		if _, dup := tenants[lid]; dup {
			return nil, fmt.Errorf("azuremsi: tenant %s is configured twice", lid)
		}
		t := tenant{resource: tc.Resource, keys: tc.Keys}
		if t.resource == "" {
			t.resource = c.Resource
		}
		if t.keys == nil {
			u := tc.KeysURL
			if u == "" {
				u = KeysURL(lid)
			}
			k, err := NewHTTPKeys(HTTPKeysConfig{URL: u, Client: c.HTTPClient, Clock: c.Clock, Logger: c.Logger})
			if err != nil {
				return nil, fmt.Errorf("azuremsi: tenant %s: %w", lid, err)
			}
			t.keys = k
		}
		tenants[lid] = t
	}
	return &Server{c: c, tenants: tenants}, nil
}

func (s *Server) Name() string { return Name }

// claims are the claims of a managed identity access token that matter here.
type claims struct {
	jwt.Claims
	TenantID string `json:"tid"`
	ObjectID string `json:"oid"`
	AppID    string `json:"appid"`
	IDType   string `json:"idtyp"`
	MIRID    string `json:"xms_mirid"`
}

// Attest verifies the token in payload. Every refusal wraps
// attestors.ErrRejected and names the check that failed. There is no
// challenge: the token is the whole evidence, and replay is refused through
// Attested.
func (s *Server) Attest(ctx context.Context, payload []byte, _ attestors.Challenge) (*attestors.Result, error) {
	token, err := DecodePayload(payload)
	if err != nil {
		return nil, attestors.Rejectf("%v", err)
	}
	c, kid, err := s.verify(ctx, token)
	if err != nil {
		return nil, err
	}
	principal := c.Subject
	id, err := spiffeid.FromSegments(s.c.TrustDomain, "spire", "agent", Name, c.TenantID, principal)
	if err != nil {
		return nil, attestors.Rejectf("token: tenant ID or principal ID cannot form an agent ID: %v", err)
	}
	if !s.c.AllowReattestation {
		attested, err := s.c.Attested(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("azuremsi: could not look up agent %s: %w", id, err)
		}
		if attested {
			return nil, attestors.Rejectf("principal %s of tenant %s has already attested as %s and re-attestation is not allowed (a replayed token?)", principal, c.TenantID, id)
		}
	}
	sels := []attestors.Selector{
		{Type: Name, Value: "tenant-id:" + c.TenantID},
		{Type: Name, Value: "principal-id:" + principal},
	}
	evidence := map[string]string{
		"tenant_id":    c.TenantID,
		"principal_id": principal,
		"key_id":       kid,
	}
	if c.AppID != "" {
		evidence["client_id"] = c.AppID
	}
	if c.IssuedAt != nil {
		evidence["token_issued"] = c.IssuedAt.Time().UTC().Format(time.RFC3339)
	}
	if c.MIRID != "" {
		evidence["xms_mirid"] = c.MIRID
		sels = append(sels, ResourceSelectors(c.MIRID)...)
	}
	return &attestors.Result{
		AgentID:     id,
		Selectors:   attestors.SortSelectors(sels),
		CanReattest: s.c.AllowReattestation,
		Evidence:    evidence,
	}, nil
}

// ResourceSelectors returns the selectors of a managed identity resource ID
// (the xms_mirid claim) that names a virtual machine or a scale set, that is
// a system-assigned identity:
//
//	azure_msi:subscription-id:<subscription>
//	azure_msi:resource-group:<resource group>
//	azure_msi:virtual-machine:<name>            (or virtual-machine-scale-set:<name>)
//	azure_msi:vm-name:<resource group>:<name>   (SPIRE's, for a virtual machine)
//
// A user-assigned identity's resource ID names the identity, not the VM that
// holds it (one identity can be on many VMs), so it yields no selectors.
func ResourceSelectors(mirid string) []attestors.Selector {
	p := strings.Split(mirid, "/")
	if len(p) != 9 || p[0] != "" ||
		!strings.EqualFold(p[1], "subscriptions") || !strings.EqualFold(p[3], "resourceGroups") ||
		!strings.EqualFold(p[5], "providers") || !strings.EqualFold(p[6], "Microsoft.Compute") {
		return nil
	}
	sub, rg, kind, name := p[2], p[4], p[7], p[8]
	if sub == "" || rg == "" || name == "" {
		return nil
	}
	var sels []attestors.Selector
	switch {
	case strings.EqualFold(kind, "virtualMachines"):
		sels = []attestors.Selector{
			{Type: Name, Value: "virtual-machine:" + name},
			{Type: Name, Value: "vm-name:" + rg + ":" + name},
		}
	case strings.EqualFold(kind, "virtualMachineScaleSets"):
		sels = []attestors.Selector{{Type: Name, Value: "virtual-machine-scale-set:" + name}}
	default:
		return nil
	}
	return append(sels,
		attestors.Selector{Type: Name, Value: "subscription-id:" + sub},
		attestors.Selector{Type: Name, Value: "resource-group:" + rg})
}

// DecodePayload returns the token of a payload: this package's JSON (version
// 1) or SPIRE's ({"token": …}, no version). Unknown fields and trailing data
// are refused.
func DecodePayload(b []byte) (string, error) {
	if len(b) == 0 {
		return "", errors.New("payload is empty")
	}
	if len(b) > maxPayload {
		return "", fmt.Errorf("payload of %d bytes is larger than %d", len(b), maxPayload)
	}
	var p Payload
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return "", fmt.Errorf("malformed payload: %v", err)
	}
	if dec.More() {
		return "", errors.New("malformed payload: trailing data")
	}
	if p.V != Version && p.V != 0 {
		return "", fmt.Errorf("payload version %d is not supported (want %d)", p.V, Version)
	}
	if p.Token == "" {
		return "", errors.New("payload has no token")
	}
	return p.Token, nil
}

// verify checks the token's signature with a key of the tenant its tid
// names, then its issuer, audience, validity period and principal, and
// returns the claims and the signing key's ID.
func (s *Server) verify(ctx context.Context, token string) (*claims, string, error) {
	jws, kid, err := jwks.ParseRS256(token, "token")
	if err != nil {
		return nil, "", err
	}
	// The tid read before verification only chooses whose keys verify the
	// token; a token whose tid was changed fails the signature check below.
	var unverified struct {
		TenantID string `json:"tid"`
	}
	if err := json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &unverified); err != nil {
		return nil, "", attestors.Rejectf("token claims are malformed: %v", err)
	}
	if unverified.TenantID == "" {
		return nil, "", attestors.Rejectf("token has no tenant ID (tid)")
	}
	t, ok := s.tenants[unverified.TenantID]
	if !ok {
		return nil, "", attestors.Rejectf("tenant %q is not allowed", jwks.Clip(unverified.TenantID))
	}
	key, err := t.keys.Key(ctx, kid)
	if errors.Is(err, ErrUnknownKey) {
		return nil, "", attestors.Rejectf("token is signed by key %q, which is not a key of tenant %s", jwks.Clip(kid), unverified.TenantID)
	}
	if err != nil {
		return nil, "", fmt.Errorf("azuremsi: could not get signing key %q of tenant %s: %w", jwks.Clip(kid), unverified.TenantID, err)
	}
	body, err := jws.Verify(key)
	if err != nil {
		return nil, "", attestors.Rejectf("token signature does not verify with key %q of tenant %s", jwks.Clip(kid), unverified.TenantID)
	}

	// The claims are Microsoft's from here on. body is the very bytes tid
	// was read from, decoded the same way, so c.TenantID == unverified.TenantID.
	var c claims
	if err := json.Unmarshal(body, &c); err != nil {
		return nil, "", attestors.Rejectf("token claims are malformed: %v", err)
	}
	tid := c.TenantID
	if v1, v2 := "https://sts.windows.net/"+tid+"/", "https://login.microsoftonline.com/"+tid+"/v2.0"; c.Issuer != v1 && c.Issuer != v2 {
		return nil, "", attestors.Rejectf("token issuer is %q, want %q (or %q)", c.Issuer, v1, v2)
	}
	if len(c.Audience) != 1 || c.Audience[0] != t.resource {
		return nil, "", attestors.Rejectf("token audience is %s, want %q", jwks.QuoteList(c.Audience), t.resource)
	}
	if err := checkTimes(c.Claims, s.c.Clock()); err != nil {
		return nil, "", err
	}
	switch {
	case c.Subject == "" && c.ObjectID == "":
		return nil, "", attestors.Rejectf("token has no principal ID (sub or oid)")
	case c.Subject == "":
		c.Subject = c.ObjectID
	case c.ObjectID != "" && c.ObjectID != c.Subject:
		// An application's token has sub == oid; a user's does not.
		return nil, "", attestors.Rejectf("token subject %q differs from its object ID %q: not a managed identity token", c.Subject, c.ObjectID)
	}
	if c.IDType != "" && c.IDType != "app" {
		return nil, "", attestors.Rejectf("token identity type is %q, not app: not a managed identity token", c.IDType)
	}
	return &c, kid, nil
}

// checkTimes checks exp (required), nbf and iat against now, with ClockSkew
// of leeway.
func checkTimes(c jwt.Claims, now time.Time) error {
	const layout = time.RFC3339
	switch {
	case c.Expiry == nil:
		return attestors.Rejectf("token has no expiry (exp)")
	case now.After(c.Expiry.Time().Add(ClockSkew)):
		return attestors.Rejectf("token expired at %s (now %s)", c.Expiry.Time().UTC().Format(layout), now.UTC().Format(layout))
	case c.NotBefore != nil && now.Add(ClockSkew).Before(c.NotBefore.Time()):
		return attestors.Rejectf("token is not valid before %s (now %s)", c.NotBefore.Time().UTC().Format(layout), now.UTC().Format(layout))
	case c.IssuedAt != nil && now.Add(ClockSkew).Before(c.IssuedAt.Time()):
		return attestors.Rejectf("token is issued in the future, at %s (now %s)", c.IssuedAt.Time().UTC().Format(layout), now.UTC().Format(layout))
	}
	return nil
}
