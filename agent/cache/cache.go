// Package cache holds what an agent knows: the trust bundle, the entries it
// is authorized for, an X509-SVID per entry (pre-minted) and JWT-SVIDs
// (minted on demand). Workloads subscribe with their selectors and receive
// an update whenever their identities or the bundle change. Manager keeps it
// in step with the server.
//
// The cache is in memory only: SVID keys are handed to workloads and rotate
// hourly, so they are never written to disk.
package cache

import (
	"crypto"
	"crypto/x509"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/plinth-id/plinth/attestors"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Entry is a registration entry as the agent sees it.
type Entry struct {
	ID        string
	SPIFFEID  spiffeid.ID
	Selectors []attestors.Selector
	Revision  int64
	Hint      string
}

// X509SVID is a signed X509-SVID with its private key. The DER fields are
// computed once so serving a workload copies bytes only.
type X509SVID struct {
	EntryID  string
	Revision int64 // entry revision it was signed for
	ID       spiffeid.ID
	Hint     string
	Chain    []*x509.Certificate
	Key      crypto.Signer
	ChainDER []byte // concatenated DER, leaf first
	KeyDER   []byte // PKCS#8
}

// HalfLife is when the SVID should be renewed.
func (s *X509SVID) HalfLife() time.Time {
	l := s.Chain[0]
	return l.NotBefore.Add(l.NotAfter.Sub(l.NotBefore) / 2)
}

// JWTSVID is a signed JWT-SVID.
type JWTSVID struct {
	Token     string
	KeyID     string // kid of the signing key, to drop it when that key is tainted
	ID        spiffeid.ID
	Hint      string
	IssuedAt  time.Time
	ExpiresAt time.Time
}

// Identity is an entry a workload matches and its current SVID.
type Identity struct {
	Entry *Entry
	SVID  *X509SVID
}

// Update is what a subscriber receives: its identities (sorted by entry ID)
// and the bundle. Values are shared: do not modify them.
type Update struct {
	Identities []Identity
	Bundle     *spiffebundle.Bundle
}

type jwtKey struct {
	entryID  string
	audience string
}

// Cache is safe for concurrent use.
type Cache struct {
	mu      sync.RWMutex
	entries map[string]*Entry
	svids   map[string]*X509SVID
	bundle  *spiffebundle.Bundle
	jwt     map[jwtKey]*JWTSVID
	subs    map[*Subscriber]struct{}
	// taintedJWT holds the key IDs of JWT authorities the operator
	// tainted: cached JWT-SVIDs they signed are not served again.
	taintedJWT map[string]bool
	// taintedX509 holds the X.509 authorities the operator tainted.
	taintedX509 []*x509.Certificate
}

// New returns an empty cache.
func New() *Cache {
	return &Cache{
		entries: map[string]*Entry{},
		svids:   map[string]*X509SVID{},
		jwt:     map[jwtKey]*JWTSVID{},
		subs:    map[*Subscriber]struct{}{},
	}
}

// Bundle returns the current bundle (nil before the first sync).
func (c *Cache) Bundle() *spiffebundle.Bundle {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.bundle
}

// Entries returns every entry, sorted by ID.
func (c *Cache) Entries() []*Entry {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]*Entry, 0, len(c.entries))
	for _, e := range c.entries {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b *Entry) int { return cmpString(a.ID, b.ID) })
	return out
}

// SVID returns the SVID held for an entry, or nil.
func (c *Cache) SVID(entryID string) *X509SVID {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.svids[entryID]
}

// Apply replaces the entries (when entries is not nil), stores new SVIDs and
// a new bundle (when not nil), drops SVIDs of entries that are gone, and
// tells every subscriber whose view changed.
func (c *Cache) Apply(entries []*Entry, svids []*X509SVID, bundle *spiffebundle.Bundle) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if entries != nil {
		next := make(map[string]*Entry, len(entries))
		for _, e := range entries {
			next[e.ID] = e
		}
		for id := range c.svids {
			if _, ok := next[id]; !ok {
				delete(c.svids, id)
			}
		}
		for k := range c.jwt {
			if e, ok := next[k.entryID]; !ok || e.Revision != c.entries[k.entryID].Revision {
				delete(c.jwt, k)
			}
		}
		c.entries = next
	}
	for _, s := range svids {
		if _, ok := c.entries[s.EntryID]; ok {
			c.svids[s.EntryID] = s
		}
	}
	bundleChanged := false
	if bundle != nil && (c.bundle == nil || !c.bundle.Equal(bundle)) {
		c.bundle, bundleChanged = bundle, true
	}
	for s := range c.subs {
		c.publishLocked(s, bundleChanged)
	}
}

// Match returns the identities of a workload with the given selectors: every
// entry whose selectors are all among them and that has an SVID.
func (c *Cache) Match(selectors []attestors.Selector) []Identity {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.matchLocked(selectors)
}

func (c *Cache) matchLocked(selectors []attestors.Selector) []Identity {
	var out []Identity
	for _, e := range c.entries {
		if !subset(e.Selectors, selectors) {
			continue
		}
		if s := c.svids[e.ID]; s != nil {
			out = append(out, Identity{Entry: e, SVID: s})
		}
	}
	slices.SortFunc(out, func(a, b Identity) int { return cmpString(a.Entry.ID, b.Entry.ID) })
	return out
}

// MatchEntries returns the entries a workload with the given selectors
// matches, whether or not they have an X509-SVID yet.
func (c *Cache) MatchEntries(selectors []attestors.Selector) []*Entry {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out []*Entry
	for _, e := range c.entries {
		if subset(e.Selectors, selectors) {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b *Entry) int { return cmpString(a.ID, b.ID) })
	return out
}

// subset reports whether every selector of want is in have (have is small:
// a workload's selectors).
func subset(want, have []attestors.Selector) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// JWT returns a cached JWT-SVID for an entry and audience that is still
// before its half life at now, or nil.
func (c *Cache) JWT(entryID string, audience []string, now time.Time) *JWTSVID {
	c.mu.RLock()
	defer c.mu.RUnlock()
	s := c.jwt[jwtKey{entryID, audienceKey(audience)}]
	if s == nil || c.taintedJWT[s.KeyID] || !now.Before(s.IssuedAt.Add(s.ExpiresAt.Sub(s.IssuedAt)/2)) {
		return nil
	}
	return s
}

func (c *Cache) setTainted(x509s []*x509.Certificate, kids map[string]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.taintedX509, c.taintedJWT = x509s, kids
}

// Tainted returns the X.509 authorities the operator tainted: whatever they
// signed, the agent's own SVID included, is replaced at once.
func (c *Cache) Tainted() []*x509.Certificate {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.taintedX509
}

// SignedBy reports whether cert was signed by one of the authorities.
func SignedBy(cert *x509.Certificate, authorities []*x509.Certificate) bool {
	for _, a := range authorities {
		if cert.CheckSignatureFrom(a) == nil {
			return true
		}
	}
	return false
}

// PutJWT caches a JWT-SVID for an entry and audience.
func (c *Cache) PutJWT(entryID string, audience []string, s *JWTSVID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[entryID]; ok {
		c.jwt[jwtKey{entryID, audienceKey(audience)}] = s
	}
}

func audienceKey(audience []string) string {
	a := slices.Clone(audience)
	slices.Sort(a)
	return strings.Join(slices.Compact(a), "\x00")
}
