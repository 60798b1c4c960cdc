package azuremsi_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/plinth-id/plinth/attestors/azuremsi"
)

func newAgent(t *testing.T, c azuremsi.AgentConfig) *azuremsi.Agent {
	t.Helper()
	if c.RetryDelay == 0 {
		c.RetryDelay = time.Millisecond
	}
	a, err := azuremsi.NewAgent(c)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func tokenURL(base string) string {
	return base + "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com%2F"
}

func TestAgentPayload(t *testing.T) {
	sim := newSim(t, ident)
	a := newAgent(t, azuremsi.AgentConfig{MetadataURL: sim.URL(), Resource: "api://plinth"})
	if a.Name() != "azure_msi" {
		t.Errorf("Name = %q", a.Name())
	}
	b, err := a.Payload(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var p azuremsi.Payload
	if err := json.Unmarshal(b, &p); err != nil || p.V != 1 || strings.Count(p.Token, ".") != 2 {
		t.Fatalf("payload = %s, %v", b, err)
	}
	// The resource asked for is the token's audience.
	s, _ := newServer(t, sim, func(c *azuremsi.ServerConfig) { c.Resource = "api://plinth" })
	if _, err := s.Attest(t.Context(), b, noChallenge); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Respond(t.Context(), []byte("x")); err == nil || err.Error() != "azuremsi: azure_msi attestation has no challenge" {
		t.Errorf("Respond = %v", err)
	}
}

func TestAgentAsksForAUserAssignedIdentity(t *testing.T) {
	var got url.Values
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.URL.Query()
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte(`{"error":"invalid_request","error_description":"Identity not found"}`))
	}))
	defer srv.Close()
	a := newAgent(t, azuremsi.AgentConfig{MetadataURL: srv.URL, ClientID: "0d9c8b7a-6f5e-4d3c-b2a1-0f9e8d7c6b5a"})
	_, err := a.Payload(t.Context(), nil)
	want := "azuremsi: could not get a token from " + srv.URL + "/metadata/identity/oauth2/token?api-version=2018-02-01&client_id=0d9c8b7a-6f5e-4d3c-b2a1-0f9e8d7c6b5a&resource=https%3A%2F%2Fmanagement.azure.com%2F" +
		`: IMDS answered 404 Not Found: "{\"error\":\"invalid_request\",\"error_description\":\"Identity not found\"}"`
	if err == nil || err.Error() != want {
		t.Fatalf("Payload = %v\nwant %s", err, want)
	}
	if got.Get("client_id") != "0d9c8b7a-6f5e-4d3c-b2a1-0f9e8d7c6b5a" {
		t.Errorf("query = %v", got)
	}
}

func TestAgentRetries(t *testing.T) {
	sim := newSim(t, ident)
	sim.Fail(2)
	a := newAgent(t, azuremsi.AgentConfig{MetadataURL: sim.URL()})
	if _, err := a.Payload(t.Context(), nil); err != nil {
		t.Fatalf("Payload after two failures = %v", err)
	}
	if n, _ := sim.Requests(); n != 3 {
		t.Errorf("%d requests, want 3", n)
	}
}

func TestAgentFailsClearly(t *testing.T) {
	tests := []struct {
		name     string
		setup    func(*testing.T) (url string, requests func() int)
		want     string
		requests int
	}{
		{name: "500", setup: func(t *testing.T) (string, func() int) {
			sim := newSim(t, ident)
			sim.Fail(5)
			return sim.URL(), func() int { n, _ := sim.Requests(); return n }
		}, want: `azuremsi: could not get a token from URL after 3 attempts: IMDS answered 500 Internal Server Error: "simulated metadata server failure"`, requests: 3},
		{name: "garbage", setup: func(t *testing.T) (string, func() int) {
			sim := newSim(t, ident)
			sim.Garbage()
			return sim.URL(), func() int { n, _ := sim.Requests(); return n }
		}, want: `azuremsi: could not get a token from URL after 3 attempts: the answer is not a token response (invalid character '<' looking for beginning of value): "<html><body>captive portal</body></html> ?"`, requests: 3},
		{name: "not a JWT", setup: func(t *testing.T) (string, func() int) {
			n := 0
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { n++; w.Write([]byte(`{"access_token":"opaque"}`)) }))
			t.Cleanup(srv.Close)
			return srv.URL, func() int { return n }
		}, want: `azuremsi: could not get a token from URL after 3 attempts: the access token is not an RS256 JWT: go-jose/go-jose: compact JWS format must have three parts`, requests: 3},
		{name: "no access token", setup: func(t *testing.T) (string, func() int) {
			n := 0
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { n++; w.Write([]byte(`{}`)) }))
			t.Cleanup(srv.Close)
			return srv.URL, func() int { return n }
		}, want: `azuremsi: could not get a token from URL after 3 attempts: the token response has no access_token`, requests: 3},
		{name: "throttled", setup: func(t *testing.T) (string, func() int) {
			n := 0
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { n++; w.WriteHeader(429) }))
			t.Cleanup(srv.Close)
			return srv.URL, func() int { return n }
		}, want: `azuremsi: could not get a token from URL after 3 attempts: IMDS answered 429 Too Many Requests: (empty)`, requests: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base, requests := tt.setup(t)
			a := newAgent(t, azuremsi.AgentConfig{MetadataURL: base})
			_, err := a.Payload(t.Context(), nil)
			want := strings.Replace(tt.want, "URL", tokenURL(base), 1)
			if err == nil || err.Error() != want {
				t.Fatalf("Payload = %v\nwant %s", err, want)
			}
			if n := requests(); n != tt.requests {
				t.Errorf("%d requests, want %d", n, tt.requests)
			}
		})
	}
}

func TestAgentUnreachable(t *testing.T) {
	sim := newSim(t, ident)
	sim.Close()
	a := newAgent(t, azuremsi.AgentConfig{MetadataURL: sim.URL()})
	_, err := a.Payload(t.Context(), nil)
	prefix := "azuremsi: could not get a token from " + tokenURL(sim.URL()) + " after 3 attempts: IMDS unreachable: "
	if err == nil || !strings.HasPrefix(err.Error(), prefix) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("Payload = %v\nwant %s… connection refused", err, prefix)
	}
}

type roundTrip func(*http.Request) (*http.Response, error)

func (f roundTrip) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestAgentStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	n := 0
	client := &http.Client{Transport: roundTrip(func(r *http.Request) (*http.Response, error) {
		n++
		cancel()
		return &http.Response{StatusCode: 503, Status: "503 Service Unavailable", Body: io.NopCloser(strings.NewReader("busy"))}, nil
	})}
	a := newAgent(t, azuremsi.AgentConfig{MetadataURL: "http://imds.test", Client: client, RetryDelay: time.Hour})
	_, err := a.Payload(ctx, nil)
	want := "azuremsi: could not get a token from " + tokenURL("http://imds.test") + `: IMDS answered 503 Service Unavailable: "busy"`
	if err == nil || err.Error() != want || n != 1 {
		t.Fatalf("Payload = %v after %d requests\nwant %s after 1", err, n, want)
	}
}

func TestNewAgentValidates(t *testing.T) {
	if _, err := azuremsi.NewAgent(azuremsi.AgentConfig{MetadataURL: "169.254.169.254"}); err == nil || err.Error() != `azuremsi: metadata URL "169.254.169.254" is not an http(s) URL` {
		t.Errorf("NewAgent = %v", err)
	}
}
