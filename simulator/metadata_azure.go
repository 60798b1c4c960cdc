package simulator

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"time"
)

// AzureIdentity is the managed identity an AzureMetadata impersonates: the
// claims of its access tokens.
type AzureIdentity struct {
	TenantID string
	// PrincipalID is the object ID of the managed identity's service
	// principal (the oid and sub claims).
	PrincipalID string
	// ClientID is its application ID (appid); default a random GUID.
	ClientID       string
	SubscriptionID string
	ResourceGroup  string
	VMName         string
	// MIRID is the xms_mirid claim; default the VM's resource ID, as for a
	// system-assigned identity. A user-assigned identity names itself
	// (…/providers/Microsoft.ManagedIdentity/userAssignedIdentities/<name>).
	MIRID string
}

// AzureMetadata is a fake Azure Instance Metadata Service that hands out
// managed identity access tokens (v1, RS256, 24 h) signed by a test key, and
// a fake Microsoft identity platform that publishes that key for the tenant,
// the way https://login.microsoftonline.com/<tenant>/discovery/v2.0/keys does.
//
// DEV/TEST ONLY. Its key is generated in memory for each instance. A server
// trusts it only when told to explicitly (its JWKS or KeysURL as the tenant's
// key source): never put either in a production configuration.
type AzureMetadata struct {
	srv *httptest.Server
	id  AzureIdentity

	mu       sync.Mutex
	keys     *metadataKeys
	now      func() time.Time
	faults   metadataFaults
	tokens   int
	jwksHits int
}

// NewAzureMetadata starts a fake IMDS for id. Close it when done.
func NewAzureMetadata(id AzureIdentity) (*AzureMetadata, error) {
	if id.TenantID == "" || id.PrincipalID == "" {
		return nil, errors.New("simulator: an Azure identity needs a tenant ID and a principal ID")
	}
	if id.ClientID == "" {
		id.ClientID = randomGUID()
	}
	if id.MIRID == "" {
		if id.SubscriptionID == "" || id.ResourceGroup == "" || id.VMName == "" {
			return nil, errors.New("simulator: an Azure identity needs a subscription, a resource group and a VM name, or an explicit MIRID")
		}
		id.MIRID = fmt.Sprintf("/subscriptions/%s/resourcegroups/%s/providers/Microsoft.Compute/virtualMachines/%s",
			id.SubscriptionID, id.ResourceGroup, id.VMName)
	}
	keys, err := newMetadataKeys(true)
	if err != nil {
		return nil, err
	}
	m := &AzureMetadata{id: id, keys: keys, now: time.Now}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metadata/identity/oauth2/token", m.token)
	mux.HandleFunc("GET /{tenant}/discovery/v2.0/keys", m.certs)
	m.srv = httptest.NewServer(mux)
	return m, nil
}

// Close stops the server; requests fail as if IMDS were unreachable.
func (m *AzureMetadata) Close() { m.srv.Close() }

// URL is IMDS's base URL (the agent's metadata URL).
func (m *AzureMetadata) URL() string { return m.srv.URL }

// KeysURL is the URL of the tenant's test keys, as a JWKS.
func (m *AzureMetadata) KeysURL() string {
	return m.srv.URL + "/" + m.id.TenantID + "/discovery/v2.0/keys"
}

// JWKS returns the test keys (the current one and any rotated out) as a
// JWKS document.
func (m *AzureMetadata) JWKS() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.jwks()
}

// KeyID returns the ID of the key that signs tokens now.
func (m *AzureMetadata) KeyID() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.keys.kid
}

// RotateKey makes a new signing key; the JWKS keeps the old ones too.
func (m *AzureMetadata) RotateKey() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.keys.rotate()
}

// SetClock sets the time tokens are issued at; default time.Now.
func (m *AzureMetadata) SetClock(now func() time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.now = now
}

// Fail makes the next n token requests answer 500.
func (m *AzureMetadata) Fail(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.faults.fail = n
}

// Garbage makes every token request from now on answer 200 with a body that
// is not a token response.
func (m *AzureMetadata) Garbage() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.faults.garbage = true
}

// Reset clears Fail and Garbage.
func (m *AzureMetadata) Reset() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.faults = metadataFaults{}
}

// Requests returns how many token and key requests were served (including
// refused and faulty ones).
func (m *AzureMetadata) Requests() (token, jwks int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.tokens, m.jwksHits
}

// Token mints an access token for resource, as IMDS would hand it to the VM.
func (m *AzureMetadata) Token(resource string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.keys.sign(m.Claims(resource, m.now()), nil)
}

// Claims returns the claims an access token for resource issued at iat
// carries, in the shape of a real v1 managed identity token: tests alter
// them and sign them with SignClaims.
func (m *AzureMetadata) Claims(resource string, iat time.Time) map[string]any {
	id := m.id
	issuer := "https://sts.windows.net/" + id.TenantID + "/"
	return map[string]any{
		"aud":       resource,
		"iss":       issuer,
		"iat":       iat.Unix(),
		"nbf":       iat.Unix(),
		"exp":       iat.Add(24*time.Hour + 5*time.Minute).Unix(),
		"aio":       "E2RgYGhyZf8tL1Tt9P5/AQ==",
		"appid":     id.ClientID,
		"appidacr":  "2",
		"idp":       issuer,
		"idtyp":     "app",
		"oid":       id.PrincipalID,
		"rh":        "0.AAAA" + id.TenantID[:8] + ".",
		"sub":       id.PrincipalID,
		"tid":       id.TenantID,
		"uti":       "Qp4tVfXm_Eu2YcJ6sF0WAA",
		"ver":       "1.0",
		"xms_mirid": id.MIRID,
		"xms_tcdt":  iat.Add(-400 * 24 * time.Hour).Unix(),
	}
}

// SignClaims signs claims with the current test key, as a compact JWT with
// Microsoft's header (typ, alg, x5t, kid).
func (m *AzureMetadata) SignClaims(claims any) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.keys.sign(claims, nil)
}

func (m *AzureMetadata) jwks() []byte {
	return m.keys.jwks(map[string]any{"issuer": "https://login.microsoftonline.com/" + m.id.TenantID + "/v2.0"})
}

func (m *AzureMetadata) token(w http.ResponseWriter, r *http.Request) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tokens++
	fail := func(code int, e, desc string) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(map[string]string{"error": e, "error_description": desc})
	}
	q := r.URL.Query()
	switch {
	case r.Header.Get("Metadata") != "true":
		fail(http.StatusBadRequest, "invalid_request", "Required metadata header not specified")
		return
	case q.Get("api-version") == "":
		fail(http.StatusBadRequest, "invalid_request", "Required query variable 'api-version' is missing")
		return
	case q.Get("resource") == "":
		fail(http.StatusBadRequest, "invalid_request", "Required audience parameter not specified")
		return
	}
	if m.faults.serve(w) {
		return
	}
	now := m.now()
	resource := q.Get("resource")
	tok, err := m.keys.sign(m.Claims(resource, now), nil)
	if err != nil {
		fail(http.StatusInternalServerError, "unknown_error", err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	json.NewEncoder(w).Encode(map[string]string{
		"access_token":   tok,
		"client_id":      m.id.ClientID,
		"expires_in":     "86699",
		"expires_on":     unixString(now.Add(24*time.Hour + 5*time.Minute)),
		"ext_expires_in": "86699",
		"not_before":     unixString(now),
		"resource":       resource,
		"token_type":     "Bearer",
	})
}

func (m *AzureMetadata) certs(w http.ResponseWriter, r *http.Request) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.jwksHits++
	if r.PathValue("tenant") != m.id.TenantID {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusBadRequest)
		w.Write([]byte(`{"error":"invalid_tenant","error_description":"AADSTS90002: Tenant not found."}`))
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "max-age=86400, private")
	w.Write(m.jwks())
}

func randomGUID() string {
	b := make([]byte, 16)
	rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
