package gcpiit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/plinth-id/plinth/attestors/internal/jwks"
	"log/slog"
	"strconv"
	"time"

	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/plinth-id/plinth/attestors"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

const (
	// Name is the attestation type on the wire.
	Name = "gcp_iit"
	// DefaultAudience is the audience SPIRE's agent requests and its server
	// requires.
	DefaultAudience = "spire-gcp-node-attestor"
	// GoogleKeysURL is where Google publishes the keys that sign identity
	// tokens, as a JWKS.
	GoogleKeysURL = "https://www.googleapis.com/oauth2/v3/certs"
	// Issuer is the issuer of every instance identity token.
	Issuer = "https://accounts.google.com"
	// ClockSkew is the leeway allowed on exp, nbf and iat.
	ClockSkew = time.Minute
	// maxPayload bounds a payload; real tokens are about 1 KiB.
	maxPayload = 64 << 10
)

// Payload is the agent's only message, JSON. A SPIRE agent sends the bare
// token instead, which the server accepts too.
type Payload struct {
	V     int    `json:"v"`
	Token string `json:"token"`
}

// Version is the payload version this package speaks.
const Version = 1

// ServerConfig configures the server half.
type ServerConfig struct {
	TrustDomain spiffeid.TrustDomain
	// Audience the token must be for; default DefaultAudience (SPIRE's).
	Audience string
	// Keys verify the token; default Google's published keys
	// (GoogleKeysURL), downloaded and cached. Tests and closed networks pass
	// their own (ParseJWKS, NewHTTPKeys, KeySources).
	Keys KeySource
	// ProjectIDs allowed to attest; empty allows any project, which with
	// Google's keys means any VM on GCP: configure it in production.
	ProjectIDs []string
	// MaxAge, when set, refuses tokens issued longer ago (now − iat), on top
	// of their own expiry (1 h). The metadata server may hand out a cached
	// token, so keep it well above a few minutes.
	MaxAge time.Duration
	// AllowReattestation lets an instance that already attested attest again
	// (and makes its agent re-attestable). Without it a second attestation
	// of the same instance is refused, as in SPIRE.
	AllowReattestation bool
	// Attested reports whether an agent with this ID has attested before.
	// Required unless AllowReattestation.
	Attested func(ctx context.Context, agentID spiffeid.ID) (bool, error)
	Clock    func() time.Time
	Logger   *slog.Logger
}

// Server is the server half: it verifies the identity token and turns its
// compute_engine claims into the agent ID and selectors. It is safe for
// concurrent use.
type Server struct {
	c        ServerConfig
	projects map[string]bool
}

// NewServer validates c. It does no I/O: Google's keys are downloaded on
// first use.
func NewServer(c ServerConfig) (*Server, error) {
	if c.TrustDomain.IsZero() {
		return nil, errors.New("gcpiit: trust domain is required")
	}
	if c.Audience == "" {
		c.Audience = DefaultAudience
	}
	if c.Attested == nil && !c.AllowReattestation {
		return nil, errors.New("gcpiit: refusing replays needs the attested-agent lookup; provide Attested or allow re-attestation")
	}
	if c.MaxAge < 0 {
		return nil, fmt.Errorf("gcpiit: max age %s is negative", c.MaxAge)
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Keys == nil {
		k, err := NewHTTPKeys(HTTPKeysConfig{URL: GoogleKeysURL, Clock: c.Clock, Logger: c.Logger})
		if err != nil {
			return nil, err
		}
		c.Keys = k
	}
	projects := map[string]bool{}
	for _, p := range c.ProjectIDs {
		if p == "" {
			return nil, errors.New("gcpiit: empty project ID in the allowed project IDs")
		}
		projects[p] = true
	}
	if len(projects) == 0 {
		c.Logger.Warn("gcp_iit accepts every GCP project: any VM on GCP can attest; set projectid_allow_list")
	}
	return &Server{c: c, projects: projects}, nil
}

func (s *Server) Name() string { return Name }

// claims are the claims of an instance identity token requested with
// format=full.
type claims struct {
	jwt.Claims
	AuthorizedParty string `json:"azp"`
	Email           string `json:"email"`
	EmailVerified   bool   `json:"email_verified"`
	Google          struct {
		ComputeEngine *computeEngine `json:"compute_engine"`
	} `json:"google"`
}

type computeEngine struct {
	ProjectID                 string      `json:"project_id"`
	ProjectNumber             json.Number `json:"project_number"`
	Zone                      string      `json:"zone"`
	InstanceID                string      `json:"instance_id"`
	InstanceName              string      `json:"instance_name"`
	InstanceCreationTimestamp json.Number `json:"instance_creation_timestamp"`
}

// Attest verifies the identity token in payload. Every refusal wraps
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
	ce := c.Google.ComputeEngine
	if len(s.projects) > 0 && !s.projects[ce.ProjectID] {
		return nil, attestors.Rejectf("project %q is not in the allowed project IDs", ce.ProjectID)
	}
	id, err := spiffeid.FromSegments(s.c.TrustDomain, "spire", "agent", Name, ce.ProjectID, ce.InstanceID)
	if err != nil {
		return nil, attestors.Rejectf("identity token: project ID or instance ID cannot form an agent ID: %v", err)
	}
	if !s.c.AllowReattestation {
		attested, err := s.c.Attested(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("gcpiit: could not look up agent %s: %w", id, err)
		}
		if attested {
			return nil, attestors.Rejectf("instance %s of project %s has already attested as %s and re-attestation is not allowed (a replayed identity token?)", ce.InstanceID, ce.ProjectID, id)
		}
	}
	sels := []attestors.Selector{
		{Type: Name, Value: "project-id:" + ce.ProjectID},
		{Type: Name, Value: "project-number:" + ce.ProjectNumber.String()},
		{Type: Name, Value: "zone:" + ce.Zone},
		{Type: Name, Value: "instance-id:" + ce.InstanceID},
		{Type: Name, Value: "instance-name:" + ce.InstanceName},
	}
	if c.Email != "" && c.EmailVerified {
		sels = append(sels, attestors.Selector{Type: Name, Value: "sa:" + c.Email})
	}
	evidence := map[string]string{
		"project_id":     ce.ProjectID,
		"project_number": ce.ProjectNumber.String(),
		"zone":           ce.Zone,
		"instance_id":    ce.InstanceID,
		"instance_name":  ce.InstanceName,
		"token_issued":   c.IssuedAt.Time().UTC().Format(time.RFC3339),
		"key_id":         kid,
	}
	if t, err := ce.InstanceCreationTimestamp.Int64(); err == nil {
		evidence["instance_created"] = time.Unix(t, 0).UTC().Format(time.RFC3339)
	}
	return &attestors.Result{
		AgentID:     id,
		Selectors:   attestors.SortSelectors(sels),
		CanReattest: s.c.AllowReattestation,
		Evidence:    evidence,
	}, nil
}

// DecodePayload returns the token of a payload: either this package's JSON
// (version 1, unknown fields and trailing data refused) or, as SPIRE's agent
// sends it, the bare token.
func DecodePayload(b []byte) (string, error) {
	if len(b) == 0 {
		return "", errors.New("payload is empty")
	}
	if len(b) > maxPayload {
		return "", fmt.Errorf("payload of %d bytes is larger than %d", len(b), maxPayload)
	}
	if b[0] != '{' {
		return string(bytes.TrimSpace(b)), nil
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
	if p.V != Version {
		return "", fmt.Errorf("payload version %d is not supported (want %d)", p.V, Version)
	}
	if p.Token == "" {
		return "", errors.New("payload has no token")
	}
	return p.Token, nil
}

// verify checks the token's signature, issuer, audience, validity period and
// compute_engine claims, and returns the claims and the signing key's ID.
// Nothing in the token is trusted before its signature is verified with a key
// from s.c.Keys.
func (s *Server) verify(ctx context.Context, token string) (*claims, string, error) {
	jws, kid, err := jwks.ParseRS256(token, "identity token")
	if err != nil {
		return nil, "", err
	}
	key, err := s.c.Keys.Key(ctx, kid)
	if errors.Is(err, ErrUnknownKey) {
		return nil, "", attestors.Rejectf("identity token is signed by key %q, which is not a trusted key", jwks.Clip(kid))
	}
	if err != nil {
		return nil, "", fmt.Errorf("gcpiit: could not get signing key %q: %w", jwks.Clip(kid), err)
	}
	body, err := jws.Verify(key)
	if err != nil {
		return nil, "", attestors.Rejectf("identity token signature does not verify with key %q", jwks.Clip(kid))
	}

	// The claims are Google's from here on.
	var c claims
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&c); err != nil {
		return nil, "", attestors.Rejectf("identity token claims are malformed: %v", err)
	}
	if c.Issuer != Issuer {
		return nil, "", attestors.Rejectf("identity token issuer is %q, want %q", c.Issuer, Issuer)
	}
	if len(c.Audience) != 1 || c.Audience[0] != s.c.Audience {
		return nil, "", attestors.Rejectf("identity token audience is %s, want %q", jwks.QuoteList(c.Audience), s.c.Audience)
	}
	if err := checkTimes(c.Claims, s.c.Clock(), s.c.MaxAge); err != nil {
		return nil, "", err
	}
	ce := c.Google.ComputeEngine
	if ce == nil {
		return nil, "", attestors.Rejectf("identity token has no google.compute_engine claims (request it with format=full)")
	}
	for _, f := range []struct{ name, val string }{
		{"project_id", ce.ProjectID},
		{"project_number", ce.ProjectNumber.String()},
		{"zone", ce.Zone},
		{"instance_id", ce.InstanceID},
		{"instance_name", ce.InstanceName},
		{"instance_creation_timestamp", ce.InstanceCreationTimestamp.String()},
	} {
		if f.val == "" {
			return nil, "", attestors.Rejectf("identity token has no google.compute_engine.%s claim", f.name)
		}
	}
	if _, err := strconv.ParseUint(ce.ProjectNumber.String(), 10, 64); err != nil {
		return nil, "", attestors.Rejectf("identity token google.compute_engine.project_number %q is not a number", ce.ProjectNumber)
	}
	return &c, kid, nil
}

// checkTimes checks exp (required), nbf and iat (required) against now, with
// ClockSkew of leeway, and the token's age against maxAge when set.
func checkTimes(c jwt.Claims, now time.Time, maxAge time.Duration) error {
	const layout = time.RFC3339
	switch {
	case c.Expiry == nil:
		return attestors.Rejectf("identity token has no expiry (exp)")
	case c.IssuedAt == nil:
		return attestors.Rejectf("identity token has no issue time (iat)")
	case now.After(c.Expiry.Time().Add(ClockSkew)):
		return attestors.Rejectf("identity token expired at %s (now %s)", c.Expiry.Time().UTC().Format(layout), now.UTC().Format(layout))
	case c.NotBefore != nil && now.Add(ClockSkew).Before(c.NotBefore.Time()):
		return attestors.Rejectf("identity token is not valid before %s (now %s)", c.NotBefore.Time().UTC().Format(layout), now.UTC().Format(layout))
	case now.Add(ClockSkew).Before(c.IssuedAt.Time()):
		return attestors.Rejectf("identity token is issued in the future, at %s (now %s)", c.IssuedAt.Time().UTC().Format(layout), now.UTC().Format(layout))
	case maxAge > 0 && now.Sub(c.IssuedAt.Time()) > maxAge:
		return attestors.Rejectf("identity token was issued at %s, more than %s ago (now %s)", c.IssuedAt.Time().UTC().Format(layout), maxAge, now.UTC().Format(layout))
	}
	return nil
}
