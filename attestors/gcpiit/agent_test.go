package gcpiit_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/plinth-id/plinth/attestors/gcpiit"
)

func newAgent(t *testing.T, c gcpiit.AgentConfig) *gcpiit.Agent {
	t.Helper()
	if c.RetryDelay == 0 {
		c.RetryDelay = time.Millisecond
	}
	a, err := gcpiit.NewAgent(c)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func identityURL(base string) string {
	return base + "/computeMetadata/v1/instance/service-accounts/default/identity?audience=spire-gcp-node-attestor&format=full"
}

func TestAgentPayload(t *testing.T) {
	sim := newSim(t)
	a := newAgent(t, gcpiit.AgentConfig{MetadataURL: sim.URL(), Audience: "plinth-eu"})
	if a.Name() != "gcp_iit" {
		t.Errorf("Name = %q", a.Name())
	}
	b, err := a.Payload(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var p gcpiit.Payload
	if err := json.Unmarshal(b, &p); err != nil || p.V != 1 || strings.Count(p.Token, ".") != 2 {
		t.Fatalf("payload = %s, %v", b, err)
	}
	// The audience asked for is the one in the token.
	s, _ := newServer(t, sim, func(c *gcpiit.ServerConfig) { c.Audience = "plinth-eu" })
	if _, err := s.Attest(t.Context(), b, noChallenge); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Respond(t.Context(), []byte("x")); err == nil || err.Error() != "gcpiit: gcp_iit attestation has no challenge" {
		t.Errorf("Respond = %v", err)
	}
}

func TestAgentRetries(t *testing.T) {
	sim := newSim(t)
	sim.Fail(2)
	a := newAgent(t, gcpiit.AgentConfig{MetadataURL: sim.URL()})
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
		sa       string
		want     string // the error, with URL for the identity URL
		requests int
	}{
		{name: "500", setup: func(t *testing.T) (string, func() int) {
			sim := newSim(t)
			sim.Fail(5)
			return sim.URL(), func() int { n, _ := sim.Requests(); return n }
		}, want: `gcpiit: could not get an identity token from URL after 3 attempts: metadata server answered 500 Internal Server Error: "simulated metadata server failure"`, requests: 3},
		{name: "garbage", setup: func(t *testing.T) (string, func() int) {
			sim := newSim(t)
			sim.Garbage()
			return sim.URL(), func() int { n, _ := sim.Requests(); return n }
		}, want: `gcpiit: could not get an identity token from URL after 3 attempts: the answer is not an RS256 JWT (go-jose/go-jose: compact JWS format must have three parts): "<html><body>captive portal</body></html> ?"`, requests: 3},
		{name: "not the metadata server", setup: func(t *testing.T) (string, func() int) {
			n := 0
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { n++; w.Write([]byte("a.b.c")) }))
			t.Cleanup(srv.Close)
			return srv.URL, func() int { return n }
		}, want: `gcpiit: could not get an identity token from URL: the answer has no Metadata-Flavor: Google header; this is not the GCE metadata server`, requests: 1},
		{name: "unknown service account", setup: func(t *testing.T) (string, func() int) {
			sim := newSim(t)
			return sim.URL(), func() int { n, _ := sim.Requests(); return n }
		}, sa: "nobody@example.iam.gserviceaccount.com", want: `gcpiit: could not get an identity token from URL: metadata server answered 404 Not Found: "service account not found"`, requests: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base, requests := tt.setup(t)
			a := newAgent(t, gcpiit.AgentConfig{MetadataURL: base, ServiceAccount: tt.sa})
			_, err := a.Payload(t.Context(), nil)
			u := identityURL(base)
			if tt.sa != "" {
				u = strings.Replace(u, "/default/", "/"+tt.sa+"/", 1)
			}
			want := strings.Replace(tt.want, "URL", u, 1)
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
	sim := newSim(t)
	sim.Close()
	a := newAgent(t, gcpiit.AgentConfig{MetadataURL: sim.URL()})
	_, err := a.Payload(t.Context(), nil)
	prefix := "gcpiit: could not get an identity token from " + identityURL(sim.URL()) + " after 3 attempts: metadata server unreachable: "
	if err == nil || !strings.HasPrefix(err.Error(), prefix) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("Payload = %v\nwant %s… connection refused", err, prefix)
	}
}

// roundTrip is an http.RoundTripper from a function.
type roundTrip func(*http.Request) (*http.Response, error)

func (f roundTrip) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestAgentStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	n := 0
	// The metadata server fails, and the agent is stopped meanwhile: it does
	// not wait an hour to retry.
	client := &http.Client{Transport: roundTrip(func(r *http.Request) (*http.Response, error) {
		n++
		cancel()
		return &http.Response{StatusCode: 503, Status: "503 Service Unavailable", Body: io.NopCloser(strings.NewReader("busy"))}, nil
	})}
	a := newAgent(t, gcpiit.AgentConfig{MetadataURL: "http://metadata.test", Client: client, RetryDelay: time.Hour})
	_, err := a.Payload(ctx, nil)
	want := "gcpiit: could not get an identity token from " + identityURL("http://metadata.test") +
		`: metadata server answered 503 Service Unavailable: "busy"`
	if err == nil || err.Error() != want || n != 1 {
		t.Fatalf("Payload = %v after %d requests\nwant %s after 1", err, n, want)
	}
}

func TestNewAgentValidates(t *testing.T) {
	for _, c := range []struct {
		c    gcpiit.AgentConfig
		want string
	}{
		{gcpiit.AgentConfig{MetadataURL: "metadata.google.internal"}, `gcpiit: metadata URL "metadata.google.internal" is not an http(s) URL`},
		{gcpiit.AgentConfig{ServiceAccount: "a/b"}, `gcpiit: service account "a/b" contains a slash`},
	} {
		if _, err := gcpiit.NewAgent(c.c); err == nil || err.Error() != c.want {
			t.Errorf("NewAgent(%+v) = %v, want %q", c.c, err, c.want)
		}
	}
}
