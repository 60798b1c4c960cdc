package awsiid

import (
	"bytes"
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// DefaultEndpoint is the instance metadata service of EC2.
const DefaultEndpoint = "http://169.254.169.254"

// IMDSv2 paths and headers.
const (
	tokenPath     = "/latest/api/token"
	documentPath  = "/latest/dynamic/instance-identity/document"
	signaturePath = "/latest/dynamic/instance-identity/rsa2048"
	tokenHeader   = "X-aws-ec2-metadata-token"
	ttlHeader     = "X-aws-ec2-metadata-token-ttl-seconds"
	tokenTTL      = "60"
	maxIMDSBody   = 64 << 10
)

// AgentConfig configures the agent half.
type AgentConfig struct {
	// Endpoint is the IMDS base URL (SPIRE's ec2_metadata_endpoint); default
	// DefaultEndpoint.
	Endpoint string
	// HTTPClient talks to IMDS; default a client with a 5 s timeout that
	// ignores proxy settings (IMDS is link-local).
	HTTPClient *http.Client
	// Tries is how many times Payload reads IMDS before giving up; default 3.
	Tries int
	// Backoff is the wait after the first failed try; it doubles after each
	// one. Default 200 ms.
	Backoff time.Duration
	Log     *slog.Logger
}

// Agent is the agent half: it reads the instance identity document and its
// RSA-2048 signature from IMDSv2.
type Agent struct {
	c    AgentConfig
	base string
}

// NewAgent validates c.
func NewAgent(c AgentConfig) (*Agent, error) {
	if c.Endpoint == "" {
		c.Endpoint = DefaultEndpoint
	}
	u, err := url.Parse(c.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("awsiid: IMDS endpoint %q is not an http(s) base URL", c.Endpoint)
	}
	if c.HTTPClient == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.Proxy = nil
		c.HTTPClient = &http.Client{Timeout: 5 * time.Second, Transport: t}
	}
	if c.Tries <= 0 {
		c.Tries = 3
	}
	if c.Backoff <= 0 {
		c.Backoff = 200 * time.Millisecond
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return &Agent{c: c, base: strings.TrimSuffix(u.String(), "/")}, nil
}

func (a *Agent) Name() string { return Name }

// Payload reads the document and its signature, retrying with backoff. The
// agent key is not used: the document identifies the instance, not the key.
func (a *Agent) Payload(ctx context.Context, _ crypto.Signer) ([]byte, error) {
	wait := a.c.Backoff
	for try := 1; ; try++ {
		p, err := a.read(ctx)
		if err == nil {
			return json.Marshal(p)
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("awsiid: %w", err)
		}
		if try == a.c.Tries {
			return nil, fmt.Errorf("awsiid: %w (gave up after %d tries)", err, try)
		}
		a.c.Log.Warn("could not read the instance identity document; retrying", "err", err, "try", try, "wait", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("awsiid: %w (stopped retrying: %v)", err, ctx.Err())
		case <-t.C:
		}
		wait *= 2
	}
}

// Respond refuses: aws_iid has no challenge.
func (a *Agent) Respond(context.Context, []byte) ([]byte, error) {
	return nil, errors.New("awsiid: aws_iid attestation has no challenge")
}

// read makes one try: token, document, signature. It checks what it reads
// enough to tell garbage from a document, so that garbage is retried here
// rather than refused by the server.
func (a *Agent) read(ctx context.Context) (*Payload, error) {
	token, err := a.do(ctx, http.MethodPut, tokenPath, map[string]string{ttlHeader: tokenTTL})
	if err != nil {
		return nil, err
	}
	if len(token) == 0 || len(token) > 1024 || bytes.ContainsAny(token, " \r\n\t") {
		return nil, a.errorf(tokenPath, "returned a malformed session token")
	}
	h := map[string]string{tokenHeader: string(token)}
	doc, err := a.do(ctx, http.MethodGet, documentPath, h)
	if err != nil {
		return nil, err
	}
	if _, err := parseDocument(doc); err != nil {
		return nil, a.errorf(documentPath, "returned something that is not an instance identity document: %v", err)
	}
	sig, err := a.do(ctx, http.MethodGet, signaturePath, h)
	if err != nil {
		return nil, err
	}
	der, err := base64.StdEncoding.DecodeString(stripSpace(string(sig)))
	if err != nil {
		return nil, a.errorf(signaturePath, "returned a signature that is not base64: %v", err)
	}
	p7, err := parsePKCS7(der)
	if err != nil {
		return nil, a.errorf(signaturePath, "returned a signature that is not PKCS#7: %v", err)
	}
	if !bytes.Equal(p7.Content, doc) {
		return nil, a.errorf(signaturePath, "returned a signature over another document than %s", documentPath)
	}
	return &Payload{V: Version, Document: string(doc), RSA2048: strings.TrimSpace(string(sig))}, nil
}

// do makes one IMDS request and returns the body of a 200 response.
func (a *Agent) do(ctx context.Context, method, path string, headers map[string]string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, nil)
	if err != nil {
		return nil, a.errorf(path, "%v", err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := a.c.HTTPClient.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is in our message already
		}
		return nil, a.errorf(path, "%s failed: %v", method, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxIMDSBody+1))
	if err != nil {
		return nil, a.errorf(path, "reading the response: %v", err)
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		return nil, a.errorf(path, "refused the session token (HTTP 401)")
	case resp.StatusCode != http.StatusOK:
		return nil, a.errorf(path, "returned HTTP %s", resp.Status)
	case len(body) > maxIMDSBody:
		return nil, a.errorf(path, "returned more than %d bytes", maxIMDSBody)
	}
	return body, nil
}

func (a *Agent) errorf(path, format string, args ...any) error {
	return fmt.Errorf("IMDS %s%s: %s", a.base, path, fmt.Sprintf(format, args...))
}
