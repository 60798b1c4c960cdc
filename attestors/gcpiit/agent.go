package gcpiit

import (
	"bytes"
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/plinth-id/plinth/attestors/internal/retry"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
)

const (
	// DefaultMetadataURL is the GCE metadata server.
	DefaultMetadataURL = "http://metadata.google.internal"
	// DefaultServiceAccount is the service account whose identity token the
	// agent asks for.
	DefaultServiceAccount = "default"
	// attempts is how many times the agent asks the metadata server.
	attempts = 3
	// maxToken bounds the metadata server's answer.
	maxToken = 64 << 10
)

// AgentConfig configures the agent half.
type AgentConfig struct {
	// MetadataURL is the metadata server's base URL; default
	// DefaultMetadataURL. SPIRE's identity_token_host h means "http://" + h.
	MetadataURL string
	// ServiceAccount whose identity token to get; default "default".
	ServiceAccount string
	// Audience to ask for; it must match the server's. Default
	// DefaultAudience.
	Audience string
	// Client makes the requests; default a client with a 5 s timeout that
	// never goes through a proxy (the metadata server is link-local).
	Client *http.Client
	// RetryDelay is the wait before the second attempt, doubled before the
	// third; default 500 ms.
	RetryDelay time.Duration
}

// Agent is the agent half: it gets an identity token from the metadata
// server and sends it. It keeps no state between attestations.
type Agent struct {
	c   AgentConfig
	url string
}

// NewAgent validates c. It does no I/O.
func NewAgent(c AgentConfig) (*Agent, error) {
	if c.MetadataURL == "" {
		c.MetadataURL = DefaultMetadataURL
	}
	if c.ServiceAccount == "" {
		c.ServiceAccount = DefaultServiceAccount
	}
	if c.Audience == "" {
		c.Audience = DefaultAudience
	}
	if c.Client == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.Proxy = nil
		c.Client = &http.Client{Timeout: 5 * time.Second, Transport: t}
	}
	if c.RetryDelay == 0 {
		c.RetryDelay = 500 * time.Millisecond
	}
	base, err := url.Parse(c.MetadataURL)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("gcpiit: metadata URL %q is not an http(s) URL", c.MetadataURL)
	}
	if strings.Contains(c.ServiceAccount, "/") {
		return nil, fmt.Errorf("gcpiit: service account %q contains a slash", c.ServiceAccount)
	}
	u := base.JoinPath("computeMetadata/v1/instance/service-accounts", c.ServiceAccount, "identity")
	u.RawQuery = url.Values{"audience": {c.Audience}, "format": {"full"}}.Encode()
	return &Agent{c: c, url: u.String()}, nil
}

func (a *Agent) Name() string { return Name }

// Payload gets a fresh identity token and wraps it in a Payload. A failed
// request, a 5xx or 429 answer or an answer that is not a JWT is retried
// twice, after RetryDelay and twice that.
func (a *Agent) Payload(ctx context.Context, _ crypto.Signer) ([]byte, error) {
	tok, err := a.token(ctx)
	if err != nil {
		return nil, err
	}
	return json.Marshal(Payload{V: Version, Token: tok})
}

// Respond fails: gcp_iit has no challenge.
func (a *Agent) Respond(context.Context, []byte) ([]byte, error) {
	return nil, errors.New("gcpiit: gcp_iit attestation has no challenge")
}

func (a *Agent) token(ctx context.Context) (string, error) {
	tok, err := retry.Do(ctx, "get an identity token from "+a.url, attempts, a.c.RetryDelay, a.fetch)
	if err != nil {
		return "", fmt.Errorf("gcpiit: %w", err)
	}
	return tok, nil
}

func (a *Agent) fetch(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.url, nil)
	if err != nil {
		return "", retry.Permanent{Err: err}
	}
	req.Header.Set("Metadata-Flavor", "Google")
	resp, err := a.c.Client.Do(req)
	if err != nil {
		return "", fmt.Errorf("metadata server unreachable: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxToken+1))
	if err != nil {
		return "", fmt.Errorf("reading the answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		err := fmt.Errorf("metadata server answered %s: %s", resp.Status, retry.Snippet(b))
		if resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests {
			return "", err
		}
		return "", retry.Permanent{Err: err}
	}
	if resp.Header.Get("Metadata-Flavor") != "Google" {
		return "", retry.Permanent{Err: errors.New("the answer has no Metadata-Flavor: Google header; this is not the GCE metadata server")}
	}
	if len(b) > maxToken {
		return "", fmt.Errorf("the answer is larger than %d bytes, not an identity token", maxToken)
	}
	tok := string(bytes.TrimSpace(b))
	if _, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.RS256}); err != nil {
		return "", fmt.Errorf("the answer is not an RS256 JWT (%v): %s", err, retry.Snippet(b))
	}
	return tok, nil
}
