package awsiid

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"testing/synctest"
	"time"

	"github.com/plinth-id/plinth/simulator"
)

// inMemory serves requests with h without a network, so that the agent's
// backoff runs on synctest's fake clock.
type inMemory struct{ h http.Handler }

func (t inMemory) RoundTrip(r *http.Request) (*http.Response, error) {
	w := httptest.NewRecorder()
	t.h.ServeHTTP(w, r)
	return w.Result(), nil
}

type unreachable struct{}

func (unreachable) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, errors.New("dial tcp 169.254.169.254:80: connect: no route to host")
}

const fakeEndpoint = "http://169.254.169.254"

func TestAgentPayload(t *testing.T) {
	m := newIMDS(t, simulator.AWSIdentityDocument{})
	a, err := NewAgent(AgentConfig{Endpoint: m.URL() + "/"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := a.Payload(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := DecodePayload(b)
	if err != nil {
		t.Fatal(err)
	}
	if p.Document != string(m.Document()) || p.RSA2048 != m.RSA2048() {
		t.Error("payload is not what IMDS served")
	}
	if n := m.Requests(); n != 3 {
		t.Errorf("%d IMDS requests, want 3 (token, document, signature)", n)
	}
	if _, err := a.Respond(context.Background(), []byte("x")); err == nil || err.Error() != "awsiid: aws_iid attestation has no challenge" {
		t.Errorf("Respond: %v", err)
	}
}

// TestAgentFailures: IMDS unreachable, failing or serving garbage. The agent
// tries three times, waiting 200 ms then 400 ms, and says what went wrong
// where.
func TestAgentFailures(t *testing.T) {
	cases := []struct {
		name      string
		transport func(m *simulator.AWSIMDS) http.RoundTripper
		fault     func(m *simulator.AWSIMDS)
		want      string
		requests  int
		waited    time.Duration
	}{
		{
			name:      "unreachable",
			transport: func(*simulator.AWSIMDS) http.RoundTripper { return unreachable{} },
			want:      "awsiid: IMDS http://169.254.169.254/latest/api/token: PUT failed: dial tcp 169.254.169.254:80: connect: no route to host (gave up after 3 tries)",
			waited:    600 * time.Millisecond,
		},
		{
			name:     "HTTP 500",
			fault:    func(m *simulator.AWSIMDS) { m.Fail(100) },
			want:     "awsiid: IMDS http://169.254.169.254/latest/api/token: returned HTTP 500 Internal Server Error (gave up after 3 tries)",
			requests: 3,
			waited:   600 * time.Millisecond,
		},
		{
			name:     "garbage",
			fault:    func(m *simulator.AWSIMDS) { m.Garbage() },
			want:     "awsiid: IMDS http://169.254.169.254/latest/dynamic/instance-identity/document: returned something that is not an instance identity document: instance identity document is not valid JSON: invalid character '<' looking for beginning of value (gave up after 3 tries)",
			requests: 6,
			waited:   600 * time.Millisecond,
		},
		{
			name:     "recovers after two failures",
			fault:    func(m *simulator.AWSIMDS) { m.Fail(2) },
			requests: 5,
			waited:   600 * time.Millisecond,
		},
		{
			name:     "recovers after one failure",
			fault:    func(m *simulator.AWSIMDS) { m.Fail(1) },
			requests: 4,
			waited:   200 * time.Millisecond,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := newIMDS(t, simulator.AWSIdentityDocument{})
			if tc.fault != nil {
				tc.fault(m)
			}
			var rt http.RoundTripper = inMemory{m}
			if tc.transport != nil {
				rt = tc.transport(m)
			}
			synctest.Test(t, func(t *testing.T) {
				a, err := NewAgent(AgentConfig{Endpoint: fakeEndpoint, HTTPClient: &http.Client{Transport: rt}})
				if err != nil {
					t.Fatal(err)
				}
				start := time.Now()
				b, err := a.Payload(context.Background(), nil)
				if waited := time.Since(start); waited != tc.waited {
					t.Errorf("waited %s, want %s", waited, tc.waited)
				}
				if tc.want == "" {
					if err != nil {
						t.Fatal(err)
					}
					if _, err := DecodePayload(b); err != nil {
						t.Fatal(err)
					}
				} else if err == nil || err.Error() != tc.want {
					t.Errorf("err =\n%v\nwant\n%s", err, tc.want)
				}
			})
			if tc.requests != 0 && m.Requests() != tc.requests {
				t.Errorf("%d IMDS requests, want %d", m.Requests(), tc.requests)
			}
		})
	}
}

// TestAgentMismatchedSignature: IMDS serving a signature over another
// document is garbage too.
func TestAgentMismatchedSignature(t *testing.T) {
	m := newIMDS(t, simulator.AWSIdentityDocument{})
	other, err := m.Sign([]byte(`{"accountId":"123456789012","region":"us-east-1","instanceId":"i-0fffffffffffffff0"}`))
	if err != nil {
		t.Fatal(err)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == signaturePath {
			w.Write([]byte(other))
			return
		}
		m.ServeHTTP(w, r)
	})
	a, err := NewAgent(AgentConfig{Endpoint: fakeEndpoint, HTTPClient: &http.Client{Transport: inMemory{h}}, Tries: 1})
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.Payload(context.Background(), nil)
	if want := "awsiid: IMDS http://169.254.169.254/latest/dynamic/instance-identity/rsa2048: returned a signature over another document than /latest/dynamic/instance-identity/document (gave up after 1 tries)"; err == nil || err.Error() != want {
		t.Fatalf("err = %v\nwant %s", err, want)
	}
}

// TestAgentContext: cancelling stops the retries at once.
func TestAgentContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, err := NewAgent(AgentConfig{Endpoint: fakeEndpoint, HTTPClient: &http.Client{Transport: unreachable{}}, Tries: 10, Backoff: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err = a.Payload(ctx, nil)
		if waited := time.Since(start); waited != 1500*time.Millisecond {
			t.Errorf("returned after %s, want 1.5s", waited)
		}
		want := "awsiid: IMDS http://169.254.169.254/latest/api/token: PUT failed: dial tcp 169.254.169.254:80: connect: no route to host (stopped retrying: context deadline exceeded)"
		if err == nil || err.Error() != want {
			t.Errorf("err =\n%v\nwant\n%s", err, want)
		}
	})
}

// TestAgentRealNetwork: a closed port, over the network, fails clearly.
func TestAgentRealNetwork(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	a, err := NewAgent(AgentConfig{Endpoint: url, Tries: 2, Backoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.Payload(context.Background(), nil)
	want := "awsiid: IMDS " + url + "/latest/api/token: PUT failed: dial tcp " + url[len("http://"):] + ": connect: connection refused (gave up after 2 tries)"
	if err == nil || err.Error() != want {
		t.Fatalf("err =\n%v\nwant\n%s", err, want)
	}
}

func TestNewAgentConfig(t *testing.T) {
	for _, e := range []string{"169.254.169.254", "ftp://x", "http://", "http://x/?a=b"} {
		if _, err := NewAgent(AgentConfig{Endpoint: e}); err == nil {
			t.Errorf("endpoint %q accepted", e)
		}
	}
	a, err := NewAgent(AgentConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if a.base != DefaultEndpoint || a.c.Tries != 3 || a.c.Backoff != 200*time.Millisecond {
		t.Errorf("defaults: %s %d %s", a.base, a.c.Tries, a.c.Backoff)
	}
	if a.c.HTTPClient.Transport.(*http.Transport).Proxy != nil {
		t.Error("the default client would send IMDS requests through a proxy")
	}
}
