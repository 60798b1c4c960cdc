// Package jwks holds the signing keys JWT-based node attestors (gcp_iit,
// azure_msi) check tokens against: static key sets from configuration and
// published key sets downloaded and cached over HTTPS.
package jwks

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/plinth-id/plinth/attestors"
)

// ErrUnknownKey is wrapped by KeySource.Key when no trusted key has the ID.
var ErrUnknownKey = errors.New("no trusted key has this key ID")

// KeySource finds the public key that verifies a token by its key ID (the
// JWS "kid" header). The key always comes from the source, never from the
// token: a "jwk", "jku" or "x5c" header is ignored.
type KeySource interface {
	// Key returns the RSA public key with ID kid, or an error wrapping
	// ErrUnknownKey when the source has no such key. Any other error means the
	// source could not be consulted (a failed download).
	Key(ctx context.Context, kid string) (*rsa.PublicKey, error)
}

// StaticKeys is a fixed set of keys, typically a JWKS file from
// configuration. It never changes and does no I/O.
type StaticKeys struct{ keys map[string]*rsa.PublicKey }

// ParseJWKS parses a JSON Web Key Set ({"keys": [...]}) strictly: every key
// must be an RSA public key of at least 2048 bits with a unique "kid", usable
// for RS256 signatures ("use" and "alg", when present, must be "sig" and
// "RS256"). A key with private parameters is refused.
func ParseJWKS(b []byte) (*StaticKeys, error) {
	keys, err := parseJWKS(b, true, nil)
	if err != nil {
		return nil, err
	}
	return &StaticKeys{keys: keys}, nil
}

// Key returns the key with ID kid.
func (s *StaticKeys) Key(_ context.Context, kid string) (*rsa.PublicKey, error) {
	if k, ok := s.keys[kid]; ok {
		return k, nil
	}
	return nil, fmt.Errorf("key ID %q: %w", Clip(kid), ErrUnknownKey)
}

// Len returns the number of keys in the set.
func (s *StaticKeys) Len() int { return len(s.keys) }

// KeySources asks each source in turn and returns the first key found. A
// source that fails does not hide a key another source has; when none has
// the key, the failures are returned, or ErrUnknownKey if there were none.
type KeySources []KeySource

// Key returns the first key with ID kid among the sources, in order.
func (ks KeySources) Key(ctx context.Context, kid string) (*rsa.PublicKey, error) {
	var errs []error
	for _, s := range ks {
		k, err := s.Key(ctx, kid)
		if err == nil {
			return k, nil
		}
		if !errors.Is(err, ErrUnknownKey) {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return nil, fmt.Errorf("key ID %q: %w", Clip(kid), ErrUnknownKey)
}

// How HTTPKeys caches.
const (
	// defaultKeysTTL applies when the response has no Cache-Control max-age.
	defaultKeysTTL = time.Hour
	// maxKeysTTL caps a max-age, so a rotation is seen within a day whatever
	// the server says.
	maxKeysTTL = 24 * time.Hour
	// minRefresh is the shortest time between two downloads. It bounds the
	// downloads a stream of tokens with made-up key IDs can cause, and is the
	// shortest TTL.
	minRefresh = time.Minute
	// maxStale is how long past their expiry cached keys are still used while
	// downloads fail, so an outage of the key endpoint does not stop
	// attestation at once.
	maxStale = 24 * time.Hour
	// maxJWKSSize bounds a downloaded key set.
	maxJWKSSize = 1 << 20
	// fetchTimeout bounds one download.
	fetchTimeout = 10 * time.Second
)

// HTTPKeysConfig configures HTTPKeys.
type HTTPKeysConfig struct {
	// URL of the JWKS document. Required; https, or http to a loopback
	// address (a test server).
	URL string
	// Client makes the requests; default a client with a 10 s timeout.
	Client *http.Client
	Clock  func() time.Time
	Logger *slog.Logger
}

// HTTPKeys is a JWKS downloaded from a URL and cached. Keys are downloaded on
// first use and again when the cached set expires (after the response's
// Cache-Control max-age, 1 h without one, at most 24 h), or when a token names
// a key ID the cached set does not have (a provider publishes a new key
// before it signs with it). Downloads are at least a minute apart, so tokens
// with made-up key IDs cause at most one download a minute. If a download
// fails, the cached keys are used for up to 24 h past their expiry.
//
// Only RSA keys of at least 2048 bits usable for RS256 are kept; other keys
// in the set are skipped. HTTPKeys is safe for concurrent use; one download
// runs at a time.
type HTTPKeys struct {
	c        HTTPKeysConfig
	fetching chan struct{} // holds a token while a download runs

	mu        sync.Mutex
	keys      map[string]*rsa.PublicKey
	fresh     time.Time // the cached keys are fresh until then
	lastFetch time.Time // the last download attempt, successful or not
	lastErr   error     // the error of the last download, if it failed
}

// NewHTTPKeys validates c. It does no I/O.
func NewHTTPKeys(c HTTPKeysConfig) (*HTTPKeys, error) {
	if c.URL == "" {
		return nil, errors.New("jwks: a key set URL is required")
	}
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("jwks: key set URL %q is not an http(s) URL", c.URL)
	}
	if u.Scheme == "http" {
		ip, err := netip.ParseAddr(u.Hostname())
		if u.Hostname() != "localhost" && (err != nil || !ip.IsLoopback()) {
			return nil, fmt.Errorf("jwks: key set URL %q is plain http; keys are downloaded over https only (http only from a loopback address, for tests)", c.URL)
		}
	}
	if c.Client == nil {
		c.Client = &http.Client{Timeout: fetchTimeout}
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return &HTTPKeys{c: c, fetching: make(chan struct{}, 1)}, nil
}

// URL returns the key set URL.
func (h *HTTPKeys) URL() string { return h.c.URL }

// Key returns the key with ID kid, downloading the set when the cache is
// empty or expired, or once when kid is not in it.
func (h *HTTPKeys) Key(ctx context.Context, kid string) (*rsa.PublicKey, error) {
	now := h.c.Clock()
	h.mu.Lock()
	k, ok := h.keys[kid]
	fresh := now.Before(h.fresh)
	h.mu.Unlock()
	if ok && fresh {
		return k, nil
	}
	if err := h.refresh(ctx); err != nil && ctx.Err() != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	lastErr := h.lastErr
	if lastErr == nil {
		lastErr = errors.New("no download has succeeded")
	}
	if h.keys == nil {
		return nil, fmt.Errorf("jwks: no keys from %s: %w", h.c.URL, lastErr)
	}
	if !now.Before(h.fresh.Add(maxStale)) {
		return nil, fmt.Errorf("jwks: keys from %s expired at %s and could not be downloaded again: %w",
			h.c.URL, h.fresh.UTC().Format(time.RFC3339), lastErr)
	}
	if k, ok := h.keys[kid]; ok {
		return k, nil
	}
	if h.lastErr != nil {
		// The key may have been published since: not knowing it is this
		// server's failure, not the token's.
		return nil, fmt.Errorf("jwks: key ID %q is not among the keys cached from %s, which could not be downloaded again: %w",
			Clip(kid), h.c.URL, h.lastErr)
	}
	return nil, fmt.Errorf("key ID %q is not in %s (downloaded %s): %w",
		Clip(kid), h.c.URL, h.lastFetch.UTC().Format(time.RFC3339), ErrUnknownKey)
}

// refresh downloads the key set unless a download was attempted less than
// minRefresh ago (possibly by another caller while this one waited).
func (h *HTTPKeys) refresh(ctx context.Context) error {
	select {
	case h.fetching <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-h.fetching }()

	now := h.c.Clock()
	h.mu.Lock()
	recent := !h.lastFetch.IsZero() && now.Sub(h.lastFetch) < minRefresh
	h.mu.Unlock()
	if recent {
		return nil
	}
	keys, ttl, skipped, err := h.fetch(ctx)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lastFetch = now
	h.lastErr = err
	if err != nil {
		h.c.Logger.Warn("could not download signing keys", "url", h.c.URL, "error", err.Error())
		return err
	}
	h.keys, h.fresh = keys, now.Add(ttl)
	h.c.Logger.Debug("downloaded signing keys", "url", h.c.URL, "keys", len(keys), "skipped", skipped, "ttl", ttl)
	return nil
}

func (h *HTTPKeys) fetch(ctx context.Context) (map[string]*rsa.PublicKey, time.Duration, int, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.c.URL, nil)
	if err != nil {
		return nil, 0, 0, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := h.c.Client.Do(req)
	if err != nil {
		return nil, 0, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, 0, 0, fmt.Errorf("GET %s: %s", h.c.URL, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSSize+1))
	if err != nil {
		return nil, 0, 0, fmt.Errorf("GET %s: %w", h.c.URL, err)
	}
	if len(b) > maxJWKSSize {
		return nil, 0, 0, fmt.Errorf("GET %s: key set is larger than %d bytes", h.c.URL, maxJWKSSize)
	}
	skipped := 0
	keys, err := parseJWKS(b, false, func(i int, err error) {
		skipped++
		h.c.Logger.Debug("skipped a key of the downloaded key set", "url", h.c.URL, "index", i, "reason", err.Error())
	})
	if err != nil {
		return nil, 0, 0, fmt.Errorf("GET %s: %w", h.c.URL, err)
	}
	if len(keys) == 0 {
		return nil, 0, 0, fmt.Errorf("GET %s: the key set has no RSA signing key", h.c.URL)
	}
	return keys, cacheTTL(resp.Header.Get("Cache-Control")), skipped, nil
}

// cacheTTL returns the max-age of a Cache-Control header, within
// [minRefresh, maxKeysTTL], or defaultKeysTTL without one.
func cacheTTL(cc string) time.Duration {
	for _, d := range strings.Split(cc, ",") {
		name, val, _ := strings.Cut(strings.TrimSpace(d), "=")
		if !strings.EqualFold(name, "max-age") {
			continue
		}
		n, err := strconv.ParseInt(strings.Trim(val, `"`), 10, 64)
		if err != nil || n < 0 {
			return defaultKeysTTL
		}
		ttl := time.Duration(min(n, int64(maxKeysTTL/time.Second))) * time.Second
		return min(max(ttl, minRefresh), maxKeysTTL)
	}
	return defaultKeysTTL
}

// parseJWKS parses a key set. Strict, any unusable key is an error;
// otherwise it is reported to skip and left out.
func parseJWKS(b []byte, strict bool, skip func(int, error)) (map[string]*rsa.PublicKey, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("malformed JWKS: %v", err)
	}
	if set.Keys == nil {
		return nil, errors.New("malformed JWKS: no \"keys\" member")
	}
	keys := make(map[string]*rsa.PublicKey, len(set.Keys))
	for i, raw := range set.Keys {
		kid, k, err := parseJWK(raw)
		if err == nil {
			if _, dup := keys[kid]; dup {
				err = fmt.Errorf("key ID %q appears twice", kid)
			}
		}
		if err != nil {
			if strict {
				return nil, fmt.Errorf("JWKS key %d: %w", i, err)
			}
			if skip != nil {
				skip(i, err)
			}
			continue
		}
		keys[kid] = k
	}
	return keys, nil
}

// parseJWK parses one key of a set and checks that it can verify RS256.
func parseJWK(raw json.RawMessage) (string, *rsa.PublicKey, error) {
	var private struct {
		D, P, Q, K json.RawMessage
	}
	if err := json.Unmarshal(raw, &private); err != nil {
		return "", nil, fmt.Errorf("malformed key: %v", err)
	}
	if private.D != nil || private.P != nil || private.Q != nil || private.K != nil {
		return "", nil, errors.New("holds private key material; give public keys only")
	}
	var k jose.JSONWebKey
	if err := k.UnmarshalJSON(raw); err != nil {
		return "", nil, fmt.Errorf("malformed key: %v", err)
	}
	switch {
	case k.KeyID == "":
		return "", nil, errors.New("has no key ID (kid)")
	case k.Use != "" && k.Use != "sig":
		return "", nil, fmt.Errorf("key %q is for use %q, not sig", k.KeyID, k.Use)
	case k.Algorithm != "" && k.Algorithm != string(jose.RS256):
		return "", nil, fmt.Errorf("key %q is for %s, not RS256", k.KeyID, k.Algorithm)
	}
	pub, ok := k.Key.(*rsa.PublicKey)
	if !ok {
		return "", nil, fmt.Errorf("key %q is a %T, not an RSA public key", k.KeyID, k.Key)
	}
	if n := pub.N.BitLen(); n < 2048 {
		return "", nil, fmt.Errorf("key %q is RSA-%d; at least 2048 bits are required", k.KeyID, n)
	}
	return k.KeyID, pub, nil
}

// clip shortens a value read from an unverified token for a message.
// Clip shortens an untrusted string for an error message.
func Clip(s string) string {
	const n = 64
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// ParseRS256 parses a compact JWS that must be signed with RS256 and name
// its key ID. Nothing in it is verified yet. what names the token in the
// rejections ("identity token").
func ParseRS256(token, what string) (*jose.JSONWebSignature, string, error) {
	jws, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		var alg *jose.ErrUnexpectedSignatureAlgorithm
		if errors.As(err, &alg) {
			return nil, "", attestors.Rejectf("%s is signed with %q; only RS256 is accepted", what, alg.Got)
		}
		return nil, "", attestors.Rejectf("%s is malformed: %v", what, err)
	}
	kid := jws.Signatures[0].Header.KeyID
	if kid == "" {
		return nil, "", attestors.Rejectf("%s has no key ID (kid)", what)
	}
	return jws, kid, nil
}

// QuoteList quotes a claim's values for a message.
func QuoteList(ss []string) string {
	if len(ss) == 0 {
		return "empty"
	}
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}
