package azuremsi

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
	"time"

	"github.com/go-jose/go-jose/v4"
)

const (
	// DefaultMetadataURL is the Azure Instance Metadata Service.
	DefaultMetadataURL = "http://169.254.169.254"
	// attempts is how many times the agent asks IMDS.
	attempts = 3
	// maxAnswer bounds IMDS's answer.
	maxAnswer = 64 << 10
)

// AgentConfig configures the agent half.
type AgentConfig struct {
	// MetadataURL is IMDS's base URL; default DefaultMetadataURL.
	MetadataURL string
	// Resource to ask a token for; it must match the server's. Default
	// DefaultResource (SPIRE's resource_id).
	Resource string
	// ClientID selects a user-assigned identity when the VM has several;
	// empty uses the system-assigned one.
	ClientID string
	// Client makes the requests; default a client with a 5 s timeout that
	// never goes through a proxy (IMDS is link-local and refuses proxied
	// requests).
	Client *http.Client
	// RetryDelay is the wait before the second attempt, doubled before the
	// third; default 500 ms.
	RetryDelay time.Duration
}

// Agent is the agent half: it gets a managed identity token from IMDS and
// sends it. It keeps no state between attestations.
type Agent struct {
	c   AgentConfig
	url string
}

// NewAgent validates c. It does no I/O.
func NewAgent(c AgentConfig) (*Agent, error) {
	if c.MetadataURL == "" {
		c.MetadataURL = DefaultMetadataURL
	}
	if c.Resource == "" {
		c.Resource = DefaultResource
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
		return nil, fmt.Errorf("azuremsi: metadata URL %q is not an http(s) URL", c.MetadataURL)
	}
	u := base.JoinPath("metadata/identity/oauth2/token")
	q := url.Values{"api-version": {"2018-02-01"}, "resource": {c.Resource}}
	if c.ClientID != "" {
		q.Set("client_id", c.ClientID)
	}
	u.RawQuery = q.Encode()
	return &Agent{c: c, url: u.String()}, nil
}

func (a *Agent) Name() string { return Name }

// Payload gets a fresh token and wraps it in a Payload. A failed request, a
// 5xx or 429 answer or an answer without a JWT is retried twice, after
// RetryDelay and twice that.
func (a *Agent) Payload(ctx context.Context, _ crypto.Signer) ([]byte, error) {
	tok, err := a.token(ctx)
	if err != nil {
		return nil, err
	}
	return json.Marshal(Payload{V: Version, Token: tok})
}

// Respond fails: azure_msi has no challenge.
func (a *Agent) Respond(context.Context, []byte) ([]byte, error) {
	return nil, errors.New("azuremsi: azure_msi attestation has no challenge")
}

func (a *Agent) token(ctx context.Context) (string, error) {
	tok, err := retry.Do(ctx, "get a token from "+a.url, attempts, a.c.RetryDelay, a.fetch)
	if err != nil {
		return "", fmt.Errorf("azuremsi: %w", err)
	}
	return tok, nil
}

func (a *Agent) fetch(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.url, nil)
	if err != nil {
		return "", retry.Permanent{Err: err}
	}
	req.Header.Set("Metadata", "true")
	resp, err := a.c.Client.Do(req)
	if err != nil {
		return "", fmt.Errorf("IMDS unreachable: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return "", fmt.Errorf("reading the answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		err := fmt.Errorf("IMDS answered %s: %s", resp.Status, retry.Snippet(b))
		if resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests {
			return "", err
		}
		return "", retry.Permanent{Err: err}
	}
	if len(b) > maxAnswer {
		return "", fmt.Errorf("the answer is larger than %d bytes, not a token response", maxAnswer)
	}
	var r struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return "", fmt.Errorf("the answer is not a token response (%v): %s", err, retry.Snippet(b))
	}
	if r.AccessToken == "" {
		return "", errors.New("the token response has no access_token")
	}
	tok := string(bytes.TrimSpace([]byte(r.AccessToken)))
	if _, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.RS256}); err != nil {
		return "", fmt.Errorf("the access token is not an RS256 JWT: %v", err)
	}
	return tok, nil
}
