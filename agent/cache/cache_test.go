package cache

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"log/slog"
	"math/big"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/plinth-id/plinth/attestors"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// testCA is a real CA that signs what the fake server is asked for.
type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, URIs: []*url.URL{td.ID().URL()}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key}
}

func (c *testCA) sign(t *testing.T, id string, pub crypto.PublicKey, ttl time.Duration) []byte {
	u, _ := url.Parse(id)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), NotBefore: time.Now().Add(-time.Second), NotAfter: time.Now().Add(ttl),
		URIs: []*url.URL{u}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, pub, c.key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// fakeServer implements Client the way plinth-server answers, signing with
// a real test CA.
type fakeServer struct {
	t       *testing.T
	ca      *testCA
	mu      sync.Mutex
	entries []*types.Entry
	signed  int
	ttl     time.Duration
	err     error
	jwts    int
	tainted bool // mark the CA tainted in the bundle
}

func (f *fakeServer) Entries(context.Context) ([]*types.Entry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.entries, f.err
}

func (f *fakeServer) Bundle(context.Context) (*types.Bundle, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	return &types.Bundle{TrustDomain: td.Name(), X509Authorities: []*types.X509Certificate{{Asn1: f.ca.cert.Raw, Tainted: f.tainted}}}, nil
}

func (f *fakeServer) NewX509SVIDs(_ context.Context, ps []*svidv1.NewX509SVIDParams) ([]*svidv1.BatchNewX509SVIDResponse_Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*svidv1.BatchNewX509SVIDResponse_Result
	for _, p := range ps {
		var e *types.Entry
		for _, x := range f.entries {
			if x.Id == p.EntryId {
				e = x
			}
		}
		if e == nil {
			out = append(out, &svidv1.BatchNewX509SVIDResponse_Result{Status: &types.Status{Code: int32(codes.NotFound), Message: "not authorized"}})
			continue
		}
		csr, _ := x509.ParseCertificateRequest(p.Csr)
		id := "spiffe://" + e.SpiffeId.TrustDomain + e.SpiffeId.Path
		f.signed++
		out = append(out, &svidv1.BatchNewX509SVIDResponse_Result{Status: &types.Status{}, Svid: &types.X509SVID{CertChain: [][]byte{f.ca.sign(f.t, id, csr.PublicKey, f.ttl)}}})
	}
	return out, nil
}

func (f *fakeServer) NewJWTSVID(_ context.Context, entryID string, aud []string) (*types.JWTSVID, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.jwts++
	now := time.Now()
	return &types.JWTSVID{Token: "token-" + entryID, IssuedAt: now.Unix(), ExpiresAt: now.Add(5 * time.Minute).Unix()}, nil
}

func entry(id, path string, rev int64, sels ...string) *types.Entry {
	e := &types.Entry{Id: id, SpiffeId: &types.SPIFFEID{TrustDomain: td.Name(), Path: path}, RevisionNumber: rev}
	for _, s := range sels {
		sel, _ := attestors.ParseSelector(s)
		e.Selectors = append(e.Selectors, &types.Selector{Type: sel.Type, Value: sel.Value})
	}
	return e
}

func sel(ss ...string) []attestors.Selector {
	var out []attestors.Selector
	for _, s := range ss {
		x, _ := attestors.ParseSelector(s)
		out = append(out, x)
	}
	return attestors.SortSelectors(out)
}

func newManager(t *testing.T, f *fakeServer) *Manager {
	return &Manager{Cache: New(), Client: f, TrustDomain: td, Interval: time.Hour, Log: slog.New(slog.DiscardHandler)}
}

func TestSyncMintsAndMatches(t *testing.T) {
	f := &fakeServer{t: t, ca: newTestCA(t), ttl: time.Hour, entries: []*types.Entry{
		entry("a", "/web", 0, "unix:uid:1000"),
		entry("b", "/db", 0, "unix:uid:1000", "unix:path:/bin/db"),
	}}
	m := newManager(t, f)
	if err := m.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if f.signed != 2 {
		t.Fatalf("signed %d SVIDs, want 2 (one per entry)", f.signed)
	}
	tests := []struct {
		selectors []attestors.Selector
		want      []string
	}{
		{sel("unix:uid:1000"), []string{"spiffe://example.org/web"}},
		// Sorted by entry ID: a (web), then b (db).
		{sel("unix:uid:1000", "unix:path:/bin/db"), []string{"spiffe://example.org/web", "spiffe://example.org/db"}},
		{sel("unix:uid:1001"), nil},
		{nil, nil},
	}
	for _, tt := range tests {
		var got []string
		for _, id := range m.Cache.Match(tt.selectors) {
			got = append(got, id.SVID.ID.String())
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("Match(%v) = %v, want %v", tt.selectors, got, tt.want)
		}
	}
	// A second sync with nothing changed signs nothing.
	if err := m.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if f.signed != 2 {
		t.Fatalf("second sync signed %d SVIDs in all, want still 2", f.signed)
	}
}

func TestSyncRenewsChangedExpiringAndDropsRemoved(t *testing.T) {
	f := &fakeServer{t: t, ca: newTestCA(t), ttl: time.Hour, entries: []*types.Entry{entry("a", "/web", 0, "unix:uid:1"), entry("b", "/db", 0, "unix:uid:1")}}
	m := newManager(t, f)
	ctx := context.Background()
	if err := m.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	oldA := m.Cache.SVID("a")
	// Entry a changes revision; entry b is removed.
	f.entries = []*types.Entry{entry("a", "/web", 1, "unix:uid:1")}
	if err := m.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if m.Cache.SVID("a") == oldA {
		t.Error("SVID of a changed entry was not replaced")
	}
	if m.Cache.SVID("b") != nil {
		t.Error("SVID of a removed entry is still cached")
	}
	// Past half life: renewed.
	later := time.Now().Add(31 * time.Minute)
	m.Clock = func() time.Time { return later }
	cur := m.Cache.SVID("a")
	if err := m.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if m.Cache.SVID("a") == cur {
		t.Error("SVID past half life was not renewed")
	}
}

func TestSyncFailureKeepsCache(t *testing.T) {
	f := &fakeServer{t: t, ca: newTestCA(t), ttl: time.Hour, entries: []*types.Entry{entry("a", "/web", 0, "unix:uid:1")}}
	m := newManager(t, f)
	ctx := context.Background()
	if err := m.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	f.err = status.Error(codes.Unavailable, "server down")
	if err := m.Sync(ctx); err == nil || errors.Is(err, ErrDenied) {
		t.Fatalf("Sync with the server down = %v, want an Unavailable error that is not ErrDenied", err)
	}
	if len(m.Cache.Match(sel("unix:uid:1"))) != 1 {
		t.Fatal("cached SVID lost while the server is down")
	}
	f.err = status.Error(codes.PermissionDenied, "agent is banned")
	if err := m.Sync(ctx); !errors.Is(err, ErrDenied) {
		t.Fatalf("Sync when denied = %v, want ErrDenied", err)
	}
}

func TestSubscriberGetsUpdates(t *testing.T) {
	f := &fakeServer{t: t, ca: newTestCA(t), ttl: time.Hour, entries: []*types.Entry{entry("a", "/web", 0, "unix:uid:1")}}
	m := newManager(t, f)
	ctx := context.Background()
	if err := m.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	sub := m.Cache.Subscribe(sel("unix:uid:1"))
	defer sub.Close()
	if u := <-sub.Updates(); len(u.Identities) != 1 || u.Bundle == nil {
		t.Fatalf("first update = %d identities, bundle %v; want 1 and a bundle", len(u.Identities), u.Bundle != nil)
	}
	f.entries = append(f.entries, entry("c", "/cache", 0, "unix:uid:1"))
	if err := m.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	var u *Update
	select {
	case u = <-sub.Updates():
	default:
		t.Fatal("no update after a new entry")
	}
	if len(u.Identities) != 2 {
		t.Fatalf("update has %d identities, want 2", len(u.Identities))
	}
	// A sync that changes nothing for this workload sends nothing.
	f.entries = append(f.entries, entry("d", "/other", 0, "unix:uid:2"))
	if err := m.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case u := <-sub.Updates():
		t.Fatalf("unexpected update with %d identities", len(u.Identities))
	default:
	}
}

func TestJWTCachedUntilHalfLife(t *testing.T) {
	f := &fakeServer{t: t, ca: newTestCA(t), ttl: time.Hour, entries: []*types.Entry{entry("a", "/web", 0, "unix:uid:1")}}
	m := newManager(t, f)
	ctx := context.Background()
	if err := m.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	e := m.Cache.MatchEntries(sel("unix:uid:1"))[0]
	for range 3 {
		if _, err := m.FetchJWTSVID(ctx, e, []string{"b", "a"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.FetchJWTSVID(ctx, e, []string{"a", "b"}); err != nil {
		t.Fatal(err)
	}
	if f.jwts != 1 {
		t.Fatalf("server signed %d JWT-SVIDs, want 1 (same audience set, cached)", f.jwts)
	}
	later := time.Now().Add(3 * time.Minute)
	m.Clock = func() time.Time { return later }
	if _, err := m.FetchJWTSVID(ctx, e, []string{"a", "b"}); err != nil {
		t.Fatal(err)
	}
	if f.jwts != 2 {
		t.Fatalf("server signed %d JWT-SVIDs, want 2 (renewed past half life)", f.jwts)
	}
}

// An SVID signed by an authority the operator tainted is replaced at the
// next sync, long before half life.
func TestSyncReplacesSVIDsOfTaintedAuthority(t *testing.T) {
	f := &fakeServer{t: t, ca: newTestCA(t), ttl: time.Hour, entries: []*types.Entry{entry("a", "/web", 0, "unix:uid:1")}}
	m := newManager(t, f)
	ctx := context.Background()
	if err := m.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	before := m.Cache.SVID("a")
	f.tainted = true
	if err := m.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if m.Cache.SVID("a") == before {
		t.Fatal("the SVID of a tainted authority was kept")
	}
}
