package cache

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/plinth-id/plinth/attestors"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Client is the part of the server API the manager calls.
type Client interface {
	// Entries returns every entry the agent is authorized for.
	Entries(ctx context.Context) ([]*types.Entry, error)
	Bundle(ctx context.Context) (*types.Bundle, error)
	NewX509SVIDs(ctx context.Context, params []*svidv1.NewX509SVIDParams) ([]*svidv1.BatchNewX509SVIDResponse_Result, error)
	NewJWTSVID(ctx context.Context, entryID string, audience []string) (*types.JWTSVID, error)
}

// Manager keeps a Cache in step with the server: it syncs every Interval and
// whenever Trigger fires (the server's change notifications), and renews
// each X509-SVID at half life or when its entry changes.
type Manager struct {
	Cache       *Cache
	Client      Client
	TrustDomain spiffeid.TrustDomain
	Interval    time.Duration
	Trigger     <-chan struct{}
	Log         *slog.Logger
	Clock       func() time.Time
}

// batchSize is the most SVIDs one BatchNewX509SVID asks for (SPIRE's limit).
const batchSize = 500

func (m *Manager) now() time.Time {
	if m.Clock != nil {
		return m.Clock()
	}
	return time.Now()
}

// ErrDenied wraps a PermissionDenied from the server: the agent's own
// identity is refused (banned, evicted, expired), which only the agent can
// resolve.
var ErrDenied = errors.New("server denied the agent")

// Run syncs until ctx ends. Failures are logged and retried with backoff,
// and the cache keeps serving what it has; a PermissionDenied is returned
// (wrapping ErrDenied) for the agent to act on.
func (m *Manager) Run(ctx context.Context) error {
	backoff := time.Second
	for {
		err := m.Sync(ctx)
		wait := m.Interval
		switch {
		case errors.Is(err, ErrDenied):
			return err
		case err != nil && ctx.Err() == nil:
			m.Log.Warn("sync with server failed; serving cached SVIDs", "error", err, "retry_in", backoff.String())
			wait = min(backoff, m.Interval)
			backoff = min(backoff*2, 30*time.Second)
		default:
			backoff = time.Second
		}
		if next := m.nextRenewal(); !next.IsZero() {
			wait = min(wait, max(next.Sub(m.now()), 0))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-m.Trigger:
		case <-t.C:
		}
		t.Stop()
	}
}

func (m *Manager) nextRenewal() time.Time {
	m.Cache.mu.RLock()
	defer m.Cache.mu.RUnlock()
	var next time.Time
	for _, s := range m.Cache.svids {
		if h := s.HalfLife(); next.IsZero() || h.Before(next) {
			next = h
		}
	}
	return next
}

func denied(err error) error {
	if status.Code(err) == codes.PermissionDenied {
		return fmt.Errorf("%w: %w", ErrDenied, err)
	}
	return err
}

// Sync fetches the bundle and entries once and signs the SVIDs that are
// missing, stale or past half life.
func (m *Manager) Sync(ctx context.Context) error {
	pb, err := m.Client.Bundle(ctx)
	if err != nil {
		return fmt.Errorf("cache: could not fetch bundle: %w", denied(err))
	}
	bundle, err := BundleFromProto(m.TrustDomain, pb)
	if err != nil {
		return err
	}
	taintedX509, taintedJWT := tainted(pb)
	m.Cache.setTainted(taintedX509, taintedJWT)
	pes, err := m.Client.Entries(ctx)
	if err != nil {
		return fmt.Errorf("cache: could not fetch entries: %w", denied(err))
	}
	entries := make([]*Entry, 0, len(pes))
	for _, pe := range pes {
		e, err := entryFromProto(pe)
		if err != nil {
			m.Log.Warn("ignoring malformed entry from server", "entry_id", pe.GetId(), "error", err)
			continue
		}
		entries = append(entries, e)
	}
	var need []*Entry
	now := m.now()
	for _, e := range entries {
		s := m.Cache.SVID(e.ID)
		// Renew when missing, changed, past half life, signed by an
		// authority that left the bundle, or by one the operator tainted
		// (at once, not at half life).
		if s == nil || s.Revision != e.Revision || !now.Before(s.HalfLife()) || !SignedBy(s.Chain[len(s.Chain)-1], bundle.X509Authorities()) || SignedBy(s.Chain[len(s.Chain)-1], taintedX509) {
			need = append(need, e)
		}
	}
	// Publish the bundle and the entry set first (dropping removed entries),
	// then the new SVIDs as they arrive.
	m.Cache.Apply(entries, nil, bundle)
	for i := 0; i < len(need); i += batchSize {
		svids, err := m.sign(ctx, need[i:min(i+batchSize, len(need))])
		m.Cache.Apply(nil, svids, nil)
		if err != nil {
			return err
		}
	}
	return nil
}

func (m *Manager) sign(ctx context.Context, es []*Entry) ([]*X509SVID, error) {
	keys := make([]crypto.Signer, len(es))
	params := make([]*svidv1.NewX509SVIDParams, len(es))
	for i, e := range es {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("cache: could not generate SVID key: %w", err)
		}
		csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
		if err != nil {
			return nil, fmt.Errorf("cache: could not create CSR: %w", err)
		}
		keys[i], params[i] = key, &svidv1.NewX509SVIDParams{EntryId: e.ID, Csr: csr}
	}
	results, err := m.Client.NewX509SVIDs(ctx, params)
	if err != nil {
		return nil, fmt.Errorf("cache: could not sign SVIDs: %w", denied(err))
	}
	var out []*X509SVID
	for i, r := range results {
		if i >= len(es) {
			break
		}
		if r.GetStatus().GetCode() != int32(codes.OK) {
			m.Log.Warn("server refused an SVID", "entry_id", es[i].ID, "error", r.GetStatus().GetMessage())
			continue
		}
		s, err := newX509SVID(es[i], r.Svid, keys[i])
		if err != nil {
			m.Log.Warn("server returned a malformed SVID", "entry_id", es[i].ID, "error", err)
			continue
		}
		out = append(out, s)
	}
	m.Log.Debug("signed X509-SVIDs", "requested", len(es), "signed", len(out))
	return out, nil
}

func newX509SVID(e *Entry, p *types.X509SVID, key crypto.Signer) (*X509SVID, error) {
	if len(p.GetCertChain()) == 0 {
		return nil, errors.New("empty certificate chain")
	}
	s := &X509SVID{EntryID: e.ID, Revision: e.Revision, ID: e.SPIFFEID, Hint: e.Hint, Key: key}
	for _, der := range p.CertChain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, err
		}
		s.Chain = append(s.Chain, c)
		s.ChainDER = append(s.ChainDER, der...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	s.KeyDER = keyDER
	return s, nil
}

// FetchJWTSVID returns a JWT-SVID for the entry and audience, from the cache
// while it is before half life, otherwise newly signed by the server.
func (m *Manager) FetchJWTSVID(ctx context.Context, e *Entry, audience []string) (*JWTSVID, error) {
	if s := m.Cache.JWT(e.ID, audience, m.now()); s != nil {
		return s, nil
	}
	p, err := m.Client.NewJWTSVID(ctx, e.ID, audience)
	if err != nil {
		return nil, fmt.Errorf("cache: could not sign JWT-SVID: %w", denied(err))
	}
	s := &JWTSVID{Token: p.Token, ID: e.SPIFFEID, Hint: e.Hint, IssuedAt: time.Unix(p.IssuedAt, 0), ExpiresAt: time.Unix(p.ExpiresAt, 0), KeyID: jwtKeyID(p.Token)}
	m.Cache.PutJWT(e.ID, audience, s)
	return s, nil
}

// jwtKeyID returns the kid of a JWT's header, or "".
func jwtKeyID(token string) string {
	h, _, ok := strings.Cut(token, ".")
	if !ok {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil {
		return ""
	}
	var hdr struct {
		KID string `json:"kid"`
	}
	if json.Unmarshal(b, &hdr) != nil {
		return ""
	}
	return hdr.KID
}

func entryFromProto(p *types.Entry) (*Entry, error) {
	if p.SpiffeId == nil {
		return nil, errors.New("missing SPIFFE ID")
	}
	td, err := spiffeid.TrustDomainFromString(p.SpiffeId.TrustDomain)
	if err != nil {
		return nil, err
	}
	id, err := spiffeid.FromPath(td, p.SpiffeId.Path)
	if err != nil {
		return nil, err
	}
	sels := make([]attestors.Selector, 0, len(p.Selectors))
	for _, s := range p.Selectors {
		sels = append(sels, attestors.Selector{Type: s.Type, Value: s.Value})
	}
	return &Entry{ID: p.Id, SPIFFEID: id, Selectors: attestors.SortSelectors(sels), Revision: p.RevisionNumber, Hint: p.Hint}, nil
}

// tainted returns the authorities of the bundle the operator tainted.
func tainted(p *types.Bundle) (x509s []*x509.Certificate, jwtKIDs map[string]bool) {
	jwtKIDs = map[string]bool{}
	for _, a := range p.X509Authorities {
		if a.Tainted {
			if c, err := x509.ParseCertificate(a.Asn1); err == nil {
				x509s = append(x509s, c)
			}
		}
	}
	for _, k := range p.JwtAuthorities {
		if k.Tainted {
			jwtKIDs[k.KeyId] = true
		}
	}
	return x509s, jwtKIDs
}

// BundleFromProto converts the server's bundle for trust domain td.
func BundleFromProto(td spiffeid.TrustDomain, p *types.Bundle) (*spiffebundle.Bundle, error) {
	if p.GetTrustDomain() != td.Name() {
		return nil, fmt.Errorf("cache: server sent a bundle for %q, want %q", p.GetTrustDomain(), td.Name())
	}
	b := spiffebundle.New(td)
	for _, a := range p.X509Authorities {
		c, err := x509.ParseCertificate(a.Asn1)
		if err != nil {
			return nil, fmt.Errorf("cache: server sent a malformed X.509 authority: %w", err)
		}
		b.AddX509Authority(c)
	}
	for _, k := range p.JwtAuthorities {
		pub, err := x509.ParsePKIXPublicKey(k.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("cache: server sent a malformed JWT authority %q: %w", k.KeyId, err)
		}
		if err := b.AddJWTAuthority(k.KeyId, pub); err != nil {
			return nil, fmt.Errorf("cache: server sent a bad JWT authority %q: %w", k.KeyId, err)
		}
	}
	if p.SequenceNumber > 0 {
		b.SetSequenceNumber(p.SequenceNumber)
	}
	return b, nil
}
