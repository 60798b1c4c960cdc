package simulator_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/plinth-id/plinth/simulator"
)

var gcpInstance = simulator.GCPInstance{
	ProjectID: "plinth-prod", ProjectNumber: 123456789012, Zone: "europe-west1-b",
	InstanceID: "4528923497298347234", InstanceName: "node-1",
}

// metadataGet does a GET with headers and returns the status, the body and the
// response headers.
func metadataGet(t *testing.T, url string, header ...string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b), resp.Header
}

// verifyJWT checks tok against the JWKS at url, as a relying party would, and
// returns its claims.
func verifyJWT(t *testing.T, tok, jwksURL string) map[string]any {
	t.Helper()
	code, body, _ := metadataGet(t, jwksURL)
	if code != 200 {
		t.Fatalf("JWKS: %d %s", code, body)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal([]byte(body), &set); err != nil {
		t.Fatal(err)
	}
	parsed, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	if h := parsed.Headers[0]; h.ExtraHeaders["typ"] != "JWT" || len(set.Key(h.KeyID)) != 1 {
		t.Fatalf("header %+v does not name a published key", h)
	}
	var c map[string]any
	if err := parsed.Claims(set.Key(parsed.Headers[0].KeyID)[0].Key, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func newGCP(t *testing.T) *simulator.GCPMetadata {
	t.Helper()
	m, err := simulator.NewGCPMetadata(gcpInstance)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

func TestGCPMetadataServesIdentityTokens(t *testing.T) {
	m := newGCP(t)
	iat := time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC)
	m.SetClock(func() time.Time { return iat })
	url := m.URL() + "/computeMetadata/v1/instance/service-accounts/default/identity?audience=plinth&format=full"
	code, tok, h := metadataGet(t, url, "Metadata-Flavor", "Google")
	if code != 200 || h.Get("Metadata-Flavor") != "Google" {
		t.Fatalf("identity: %d %s", code, tok)
	}
	c := verifyJWT(t, tok, m.JWKSURL())
	ce := c["google"].(map[string]any)["compute_engine"].(map[string]any)
	if c["aud"] != "plinth" || c["iss"] != "https://accounts.google.com" || c["iat"] != float64(iat.Unix()) ||
		c["exp"] != float64(iat.Add(time.Hour).Unix()) || ce["instance_id"] != "4528923497298347234" ||
		ce["project_number"] != float64(123456789012) || c["email"] != "123456789012-compute@developer.gserviceaccount.com" {
		t.Errorf("claims = %v", c)
	}
	// The service account can be named by email too.
	code, _, _ = metadataGet(t, strings.Replace(url, "/default/", "/123456789012-compute@developer.gserviceaccount.com/", 1), "Metadata-Flavor", "Google")
	if code != 200 {
		t.Errorf("identity by email: %d", code)
	}
	_, jwksBody, jwksHeader := metadataGet(t, m.JWKSURL())
	if jwksHeader.Get("Cache-Control") != "public, max-age=3600, must-revalidate, no-transform" || jwksBody != string(m.JWKS()) {
		t.Errorf("JWKS %q, Cache-Control %q", jwksBody, jwksHeader.Get("Cache-Control"))
	}
	if identity, jwks := m.Requests(); identity != 2 || jwks != 2 {
		t.Errorf("Requests = %d, %d; want 2, 2", identity, jwks)
	}
}

func TestGCPMetadataRefusesLikeGCE(t *testing.T) {
	m := newGCP(t)
	base := m.URL() + "/computeMetadata/v1/instance/service-accounts/"
	tests := []struct {
		name, url string
		header    []string
		code      int
		body      string
	}{
		{"no Metadata-Flavor", base + "default/identity?audience=a", nil, 403, "Missing Metadata-Flavor:Google header.\n"},
		{"no audience", base + "default/identity", []string{"Metadata-Flavor", "Google"}, 400, "non-empty audience parameter required\n"},
		{"unknown service account", base + "x@y/identity?audience=a", []string{"Metadata-Flavor", "Google"}, 404, "service account not found\n"},
	}
	for _, tt := range tests {
		if code, body, _ := metadataGet(t, tt.url, tt.header...); code != tt.code || body != tt.body {
			t.Errorf("%s: %d %q, want %d %q", tt.name, code, body, tt.code, tt.body)
		}
	}
}

func TestGCPMetadataFaults(t *testing.T) {
	m := newGCP(t)
	url := m.URL() + "/computeMetadata/v1/instance/service-accounts/default/identity?audience=a"
	m.Fail(2)
	for i, want := range []int{500, 500, 200} {
		if code, _, _ := metadataGet(t, url, "Metadata-Flavor", "Google"); code != want {
			t.Errorf("request %d: %d, want %d", i, code, want)
		}
	}
	m.Garbage()
	if code, body, _ := metadataGet(t, url, "Metadata-Flavor", "Google"); code != 200 || strings.Count(body, ".") == 2 {
		t.Errorf("garbage: %d %q", code, body)
	}
	m.Reset()
	if code, body, _ := metadataGet(t, url, "Metadata-Flavor", "Google"); code != 200 || strings.Count(body, ".") != 2 {
		t.Errorf("after Reset: %d %q", code, body)
	}
}

func TestGCPMetadataRotatesKeys(t *testing.T) {
	m := newGCP(t)
	old := m.KeyID()
	if err := m.RotateKey(); err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(m.JWKS(), &set); err != nil {
		t.Fatal(err)
	}
	if m.KeyID() == old || len(set.Keys) != 2 || len(set.Key(old)) != 1 || len(set.Key(m.KeyID())) != 1 {
		t.Fatalf("after rotation: key %s, JWKS %s", m.KeyID(), m.JWKS())
	}
	tok, err := m.Token("a")
	if err != nil {
		t.Fatal(err)
	}
	verifyJWT(t, tok, m.JWKSURL())
}

func TestNewGCPMetadataValidates(t *testing.T) {
	if _, err := simulator.NewGCPMetadata(simulator.GCPInstance{ProjectID: "p"}); err == nil ||
		err.Error() != "simulator: a GCP instance needs a project ID and number, a zone, an instance ID and name" {
		t.Errorf("NewGCPMetadata = %v", err)
	}
}
