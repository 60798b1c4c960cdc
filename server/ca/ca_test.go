package ca_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/plinth-id/plinth/hsm"
	"github.com/plinth-id/plinth/hsm/memory"
	"github.com/plinth-id/plinth/server/ca"
	"github.com/plinth-id/plinth/server/datastore"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

var (
	td = spiffeid.RequireTrustDomainFromString("example.org")
	// t0 is when the fake clock starts.
	t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
)

// clock is a settable clock for ca.Config.Clock. Tests move it only between
// calls into the CA.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

// memJournal is a Journal in memory. Load fails with loadErr when set;
// Save fails with saveErr when set and then stores nothing.
type memJournal struct {
	data    []byte
	loadErr error
	saveErr error
	saves   int
}

func (j *memJournal) Load(context.Context) ([]byte, error) {
	if j.loadErr != nil {
		return nil, j.loadErr
	}
	return j.data, nil
}

func (j *memJournal) Save(_ context.Context, data []byte) error {
	if j.saveErr != nil {
		return j.saveErr
	}
	j.data = slices.Clone(data)
	j.saves++
	return nil
}

// journalView is the persisted journal as a test reads it: the format must
// stay readable across restarts and upgrades.
type journalView struct {
	X509     []slotView `json:"x509"`
	JWT      []slotView `json:"jwt"`
	Sequence uint64     `json:"sequence"`
}

type slotView struct {
	Slot   string `json:"slot"`
	KeyID  string `json:"key_id"`
	Status string `json:"status"`
}

func (j *memJournal) view(t *testing.T) journalView {
	t.Helper()
	var v journalView
	if err := json.Unmarshal(j.data, &v); err != nil {
		t.Fatalf("saved journal: %v", err)
	}
	return v
}

// newCA returns a CA over a memory key manager and a memJournal, with the
// fake clock at t0, unless c sets them.
func newCA(t *testing.T, c ca.Config) (*ca.CA, *clock, *memJournal) {
	t.Helper()
	clk := &clock{t: t0}
	j := &memJournal{}
	if c.TrustDomain.IsZero() {
		c.TrustDomain = td
	}
	if c.Keys == nil {
		c.Keys = memory.New()
	}
	if c.Journal == nil {
		c.Journal = j
	}
	if c.Clock == nil {
		c.Clock = clk.now
	}
	authority, err := ca.New(t.Context(), c)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return authority, clk, j
}

func newKey(t *testing.T) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func roots(b *ca.Bundle) []*x509.Certificate {
	var out []*x509.Certificate
	for _, a := range b.X509Authorities {
		out = append(out, a.Cert)
	}
	return out
}

func jwtKIDs(b *ca.Bundle) []string {
	var out []string
	for _, a := range b.JWTAuthorities {
		out = append(out, a.KeyID)
	}
	return out
}

func jwtBundle(b *ca.Bundle) *jwtbundle.Bundle {
	keys := map[string]crypto.PublicKey{}
	for _, a := range b.JWTAuthorities {
		keys[a.KeyID] = a.PublicKey
	}
	return jwtbundle.FromJWTAuthorities(b.TrustDomain, keys)
}

// jwtHeader decodes the JOSE header of a compact JWT.
func jwtHeader(t *testing.T, token string) map[string]string {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	var h map[string]string
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatal(err)
	}
	return h
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestPrepareAndActivateTime(t *testing.T) {
	for _, c := range []struct {
		name                string
		notBefore, notAfter time.Time
		prepare, activate   time.Time
	}{
		{"one day", t0, t0.Add(24 * time.Hour), t0.Add(12 * time.Hour), t0.Add(20 * time.Hour)},
		{"six hours", t0, t0.Add(6 * time.Hour), t0.Add(3 * time.Hour), t0.Add(5 * time.Hour)},
		{"backdated 30s", t0.Add(-30 * time.Second), t0.Add(24 * time.Hour),
			t0.Add(12*time.Hour - 15*time.Second), t0.Add(20*time.Hour - 5*time.Second)},
		{"empty life", t0, t0, t0, t0},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := ca.PrepareTime(c.notBefore, c.notAfter); !got.Equal(c.prepare) {
				t.Errorf("PrepareTime = %v, want %v", got, c.prepare)
			}
			if got := ca.ActivateTime(c.notBefore, c.notAfter); !got.Equal(c.activate) {
				t.Errorf("ActivateTime = %v, want %v", got, c.activate)
			}
		})
	}
}

func TestNewCreatesSlotA(t *testing.T) {
	keys := memory.New()
	authority, _, j := newCA(t, ca.Config{Keys: keys})

	b := authority.Bundle()
	if b.TrustDomain != td || len(b.X509Authorities) != 1 || len(b.JWTAuthorities) != 1 {
		t.Fatalf("bundle: trust domain %v, %d X.509 and %d JWT authorities; want %v, 1 and 1",
			b.TrustDomain, len(b.X509Authorities), len(b.JWTAuthorities), td)
	}
	cert := b.X509Authorities[0].Cert
	wantURIs := []string{"spiffe://example.org"}
	var gotURIs []string
	for _, u := range cert.URIs {
		gotURIs = append(gotURIs, u.String())
	}
	switch {
	case !cert.IsCA || !cert.BasicConstraintsValid:
		t.Error("CA certificate is not a CA")
	case cert.KeyUsage&x509.KeyUsageCertSign == 0:
		t.Error("CA certificate cannot sign certificates")
	case !slices.Equal(gotURIs, wantURIs):
		t.Errorf("CA certificate URIs = %v, want %v", gotURIs, wantURIs)
	case !cert.NotBefore.Equal(t0.Add(-30 * time.Second)):
		t.Errorf("NotBefore = %v, want %v", cert.NotBefore, t0.Add(-30*time.Second))
	case !cert.NotAfter.Equal(t0.Add(24 * time.Hour)):
		t.Errorf("NotAfter = %v, want the default CA TTL of 24h: %v", cert.NotAfter, t0.Add(24*time.Hour))
	case !slices.Equal(cert.Subject.Organization, []string{"SPIFFE"}):
		t.Errorf("subject organization = %v, want [SPIFFE]", cert.Subject.Organization)
	}
	if err := cert.CheckSignatureFrom(cert); err != nil {
		t.Errorf("CA certificate is not self-signed: %v", err)
	}
	if jwt := b.JWTAuthorities[0]; jwt.KeyID == "" || !jwt.ExpiresAt.Equal(t0.Add(24*time.Hour)) {
		t.Errorf("JWT authority: kid %q, expires %v; want a kid and %v", jwt.KeyID, jwt.ExpiresAt, t0.Add(24*time.Hour))
	}

	held, err := keys.ListKeys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, k := range held {
		ids = append(ids, k.ID())
	}
	if want := []string{"jwt-signer-A", "x509-ca-A"}; !slices.Equal(ids, want) {
		t.Errorf("key manager holds %v, want %v", ids, want)
	}

	want := journalView{
		X509:     []slotView{{Slot: "A", KeyID: "x509-ca-A", Status: "active"}},
		JWT:      []slotView{{Slot: "A", KeyID: "jwt-signer-A", Status: "active"}},
		Sequence: 1,
	}
	if got := j.view(t); !equalJournal(got, want) {
		t.Errorf("saved journal = %+v, want %+v", got, want)
	}
	if b.Sequence != 1 {
		t.Errorf("bundle sequence = %d, want 1", b.Sequence)
	}
}

func equalJournal(a, b journalView) bool {
	return slices.Equal(a.X509, b.X509) && slices.Equal(a.JWT, b.JWT) && a.Sequence == b.Sequence
}

func TestSubject(t *testing.T) {
	for _, c := range []struct {
		name    string
		subject pkix.Name
		want    string
	}{
		{"default", pkix.Name{}, "O=SPIFFE,C=US"},
		{"common name only", pkix.Name{CommonName: "Plinth CA"}, "CN=Plinth CA"},
		{"organization", pkix.Name{Organization: []string{"Acme"}, CommonName: "Acme CA"}, "CN=Acme CA,O=Acme"},
	} {
		t.Run(c.name, func(t *testing.T) {
			authority, _, _ := newCA(t, ca.Config{Subject: c.subject})
			cert := authority.Bundle().X509Authorities[0].Cert
			// The serial number attribute is the certificate's own.
			got := cert.Subject
			if got.SerialNumber != cert.SerialNumber.String() {
				t.Errorf("subject serial number = %q, want the certificate's %s", got.SerialNumber, cert.SerialNumber)
			}
			got.SerialNumber = ""
			got.Names = nil
			if got.String() != c.want {
				t.Errorf("subject = %q, want %q", got.String(), c.want)
			}
		})
	}
}

// A restart (a new CA over the same journal and keys, here a datastore
// closed and opened again) keeps the authorities: agents keep their bundle.
func TestNewReloadsJournal(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "ds.sqlite3")
	keys := memory.New()
	clk := &clock{t: t0}
	cfg := ca.Config{TrustDomain: td, Keys: keys, Clock: clk.now}

	store, err := datastore.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Journal = storeJournal{store}
	first, err := ca.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	before := first.Bundle()
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}

	store, err = datastore.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	cfg.Journal = storeJournal{store}
	clk.t = t0.Add(time.Hour)
	second, err := ca.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	after := second.Bundle()

	if len(after.X509Authorities) != 1 || !after.X509Authorities[0].Cert.Equal(before.X509Authorities[0].Cert) {
		t.Error("the restarted CA has a different X.509 authority")
	}
	if got, want := jwtKIDs(after), jwtKIDs(before); !slices.Equal(got, want) {
		t.Errorf("JWT key IDs after restart = %v, want %v", got, want)
	}
	if after.Sequence != before.Sequence {
		t.Errorf("bundle sequence after restart = %d, want %d (nothing changed)", after.Sequence, before.Sequence)
	}
	held, _ := keys.ListKeys(ctx)
	if len(held) != 2 {
		t.Errorf("key manager holds %d keys after restart, want 2 (no key generated)", len(held))
	}

	// What the restarted CA signs verifies against the bundle agents hold.
	chain, err := second.SignX509SVID(ctx, ca.X509Params{ID: spiffeid.RequireFromPath(td, "/w"), PublicKey: newKey(t).Public()})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.Verify(chain, x509bundle.FromX509Authorities(td, roots(before)), x509svid.WithTime(clk.t)); err != nil {
		t.Errorf("SVID of the restarted CA does not verify against the old bundle: %v", err)
	}
}

func TestNewErrors(t *testing.T) {
	ctx := t.Context()
	// A journal that names keys a fresh key manager does not hold.
	orphan := &memJournal{}
	if _, err := ca.New(ctx, ca.Config{TrustDomain: td, Keys: memory.New(), Journal: orphan, Clock: (&clock{t0}).now}); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name   string
		cfg    ca.Config
		want   string
		wantIs error
	}{
		{
			name: "no trust domain",
			cfg:  ca.Config{Keys: memory.New(), Journal: &memJournal{}},
			want: "ca: trust domain is required",
		},
		{
			name: "no key manager",
			cfg:  ca.Config{TrustDomain: td, Journal: &memJournal{}},
			want: "ca: key manager and journal are required",
		},
		{
			name: "no journal",
			cfg:  ca.Config{TrustDomain: td, Keys: memory.New()},
			want: "ca: key manager and journal are required",
		},
		{
			name: "journal cannot be read",
			cfg:  ca.Config{TrustDomain: td, Keys: memory.New(), Journal: &memJournal{loadErr: errors.New("disk on fire")}},
			want: "ca: could not load journal: disk on fire",
		},
		{
			name: "corrupt journal",
			cfg:  ca.Config{TrustDomain: td, Keys: memory.New(), Journal: &memJournal{data: []byte(`{"x509": [`)}},
			want: "ca: journal is corrupt: unexpected end of JSON input",
		},
		{
			name: "corrupt certificate in journal",
			cfg: ca.Config{TrustDomain: td, Keys: memory.New(), Journal: &memJournal{data: []byte(
				`{"x509":[{"slot":"A","key_id":"x509-ca-A","status":"active","not_before":"2030-01-01T00:00:00Z","not_after":"2030-01-03T00:00:00Z","cert_der":"AAEC"}],"sequence":1}`)}},
			want: "ca: journal holds a corrupt certificate for slot A: x509: malformed certificate",
		},
		{
			name: "journal names a key the manager lost",
			cfg:  ca.Config{TrustDomain: td, Keys: memory.New(), Journal: orphan},
			want: `ca: the journal names key "x509-ca-A" but the key manager does not hold it; ` +
				`if the keys file was lost, move the datastore's CA journal aside only if you accept a new trust bundle: ` +
				`memory: key "x509-ca-A": hsm: key not found`,
			wantIs: hsm.ErrNotFound,
		},
		{
			name: "journal cannot be saved",
			cfg:  ca.Config{TrustDomain: td, Keys: memory.New(), Journal: &memJournal{saveErr: errors.New("read-only")}},
			want: "ca: could not save journal: read-only",
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.cfg.Clock == nil {
				c.cfg.Clock = (&clock{t0}).now
			}
			authority, err := ca.New(ctx, c.cfg)
			if err == nil || err.Error() != c.want {
				t.Fatalf("New error = %v, want %q", err, c.want)
			}
			if authority != nil {
				t.Error("New returned a CA with its error")
			}
			if c.wantIs != nil && !errors.Is(err, c.wantIs) {
				t.Errorf("error does not wrap %v", c.wantIs)
			}
		})
	}
}

// TestRotation drives a full rotation with the clock: prepare at half life
// (published, not signing), activate at five sixths, drop the old authority
// when it expires.
func TestRotation(t *testing.T) {
	ctx := t.Context()
	authority, clk, j := newCA(t, ca.Config{})
	id := spiffeid.RequireFromPath(td, "/w")
	pub := newKey(t).Public()

	signer := func() (*x509.Certificate, string) {
		t.Helper()
		chain, err := authority.SignX509SVID(ctx, ca.X509Params{ID: id, PublicKey: pub})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := x509svid.Verify(chain, x509bundle.FromX509Authorities(td, roots(authority.Bundle())), x509svid.WithTime(clk.t)); err != nil {
			t.Fatalf("X509-SVID does not verify against the bundle: %v", err)
		}
		token, _, _, err := authority.SignJWTSVID(ctx, id, []string{"aud"}, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range roots(authority.Bundle()) {
			if chain[0].CheckSignatureFrom(a) == nil {
				return a, jwtHeader(t, token)["kid"]
			}
		}
		t.Fatal("X509-SVID is signed by no authority of the bundle")
		return nil, ""
	}
	rotate := func(at time.Time) {
		t.Helper()
		clk.t = at
		if err := authority.Rotate(ctx); err != nil {
			t.Fatalf("Rotate at %v: %v", at, err)
		}
	}

	first := authority.Bundle()
	oldCert, oldKID := first.X509Authorities[0].Cert, first.JWTAuthorities[0].KeyID
	prepare := ca.PrepareTime(oldCert.NotBefore, oldCert.NotAfter)
	activate := ca.ActivateTime(oldCert.NotBefore, oldCert.NotAfter)

	changed := authority.Changed()
	rotate(prepare.Add(-time.Second))
	if authority.Bundle() != first || isClosed(changed) {
		t.Fatal("the bundle changed before half life")
	}

	rotate(prepare)
	if !isClosed(changed) {
		t.Error("Changed did not fire when an authority was prepared")
	}
	b := authority.Bundle()
	if len(b.X509Authorities) != 2 || len(b.JWTAuthorities) != 2 {
		t.Fatalf("at half life the bundle has %d X.509 and %d JWT authorities, want 2 and 2", len(b.X509Authorities), len(b.JWTAuthorities))
	}
	if b.Sequence != first.Sequence+1 {
		t.Errorf("bundle sequence = %d, want %d", b.Sequence, first.Sequence+1)
	}
	newCert, newKID := b.X509Authorities[1].Cert, b.JWTAuthorities[1].KeyID
	if !b.X509Authorities[0].Cert.Equal(oldCert) || newKID == oldKID {
		t.Fatal("the prepared authority is not the second one of the bundle")
	}
	if cert, kid := signer(); !cert.Equal(oldCert) || kid != oldKID {
		t.Error("the prepared authority signs before five sixths of the old one's life")
	}
	want := journalView{
		X509:     []slotView{{"A", "x509-ca-A", "active"}, {"B", "x509-ca-B", "prepared"}},
		JWT:      []slotView{{"A", "jwt-signer-A", "active"}, {"B", "jwt-signer-B", "prepared"}},
		Sequence: 2,
	}
	if got := j.view(t); !equalJournal(got, want) {
		t.Errorf("journal after prepare = %+v, want %+v", got, want)
	}

	rotate(activate.Add(-time.Second))
	if cert, _ := signer(); !cert.Equal(oldCert) {
		t.Error("the prepared authority signs before five sixths of the old one's life")
	}

	changed = authority.Changed()
	rotate(activate)
	if !isClosed(changed) {
		t.Error("Changed did not fire when an authority was activated")
	}
	if cert, kid := signer(); !cert.Equal(newCert) || kid != newKID {
		t.Error("the prepared authority does not sign at five sixths of the old one's life")
	}
	if got := roots(authority.Bundle()); len(got) != 2 || !got[0].Equal(oldCert) {
		t.Error("the old authority left the bundle before it expired")
	}
	want = journalView{
		X509:     []slotView{{"A", "x509-ca-A", "old"}, {"B", "x509-ca-B", "active"}},
		JWT:      []slotView{{"A", "jwt-signer-A", "old"}, {"B", "jwt-signer-B", "active"}},
		Sequence: 3,
	}
	if got := j.view(t); !equalJournal(got, want) {
		t.Errorf("journal after activation = %+v, want %+v", got, want)
	}

	// The active authority passes half its life just before the old one
	// expires: its successor is prepared in slot A, replacing the old key
	// (which signs nothing more), while the old certificate stays published
	// until it expires.
	rotate(oldCert.NotAfter.Add(-time.Second))
	if got := roots(authority.Bundle()); len(got) != 3 || !got[0].Equal(oldCert) {
		t.Errorf("a second before the old authority expires the bundle has %d X.509 authorities, want 3 (old, active, prepared)", len(got))
	}
	want = journalView{
		X509:     []slotView{{"A", "", "old"}, {"B", "x509-ca-B", "active"}, {"A", "x509-ca-A", "prepared"}},
		JWT:      []slotView{{"A", "", "old"}, {"B", "jwt-signer-B", "active"}, {"A", "jwt-signer-A", "prepared"}},
		Sequence: 4,
	}
	if got := j.view(t); !equalJournal(got, want) {
		t.Errorf("journal before the old authority expires = %+v, want %+v", got, want)
	}

	rotate(oldCert.NotAfter)
	b = authority.Bundle()
	for _, c := range roots(b) {
		if c.Equal(oldCert) {
			t.Error("the expired authority is still in the bundle")
		}
	}
	if slices.Contains(jwtKIDs(b), oldKID) {
		t.Error("the expired JWT key is still in the bundle")
	}
	if cert, kid := signer(); !cert.Equal(newCert) || kid != newKID {
		t.Error("the active authority changed when the old one expired")
	}
	want = journalView{
		X509:     []slotView{{"B", "x509-ca-B", "active"}, {"A", "x509-ca-A", "prepared"}},
		JWT:      []slotView{{"B", "jwt-signer-B", "active"}, {"A", "jwt-signer-A", "prepared"}},
		Sequence: 5,
	}
	if got := j.view(t); !equalJournal(got, want) {
		t.Errorf("journal after expiry = %+v, want %+v", got, want)
	}
}

// A rotation step whose journal cannot be saved is retried whole on the next
// step: the prepared authority is published before it ever signs.
func TestRotateRetriesAfterFailedSave(t *testing.T) {
	ctx := t.Context()
	authority, clk, j := newCA(t, ca.Config{})
	first := authority.Bundle()
	oldCert := first.X509Authorities[0].Cert

	j.saveErr = errors.New("database is locked")
	clk.t = ca.PrepareTime(oldCert.NotBefore, oldCert.NotAfter)
	changed := authority.Changed()
	err := authority.Rotate(ctx)
	if want := "ca: could not save journal: database is locked"; err == nil || err.Error() != want {
		t.Fatalf("Rotate error = %v, want %q", err, want)
	}
	if authority.Bundle() != first || isClosed(changed) {
		t.Error("the bundle changed although the journal was not saved")
	}

	j.saveErr = nil
	if err := authority.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	if !isClosed(changed) {
		t.Error("Changed did not fire when the retried step prepared an authority")
	}
	if n := len(authority.Bundle().X509Authorities); n != 2 {
		t.Fatalf("after the retry the bundle has %d X.509 authorities, want 2", n)
	}
	if got := j.view(t); len(got.X509) != 2 || got.X509[1].Status != "prepared" {
		t.Errorf("saved journal after the retry = %+v, want a prepared X.509 authority", got)
	}
}

func TestSignX509SVID(t *testing.T) {
	ctx := t.Context()
	authority, clk, _ := newCA(t, ca.Config{CATTL: time.Hour, X509SVIDTTL: 20 * time.Minute})
	caNotAfter := authority.Bundle().X509Authorities[0].Cert.NotAfter
	key := newKey(t)

	for _, c := range []struct {
		name         string
		at           time.Time
		params       ca.X509Params
		wantCN       string
		wantNotAfter time.Time
	}{
		{
			name:         "default TTL",
			at:           t0,
			params:       ca.X509Params{ID: spiffeid.RequireFromPath(td, "/w")},
			wantNotAfter: t0.Add(20 * time.Minute),
		},
		{
			name:         "explicit TTL",
			at:           t0,
			params:       ca.X509Params{ID: spiffeid.RequireFromPath(td, "/w"), TTL: 5 * time.Minute},
			wantNotAfter: t0.Add(5 * time.Minute),
		},
		{
			name:         "DNS names",
			at:           t0,
			params:       ca.X509Params{ID: spiffeid.RequireFromPath(td, "/web"), DNSNames: []string{"web.example.org", "www.example.org"}},
			wantCN:       "web.example.org",
			wantNotAfter: t0.Add(20 * time.Minute),
		},
		{
			name:         "capped at the CA's expiry",
			at:           caNotAfter.Add(-10 * time.Minute),
			params:       ca.X509Params{ID: spiffeid.RequireFromPath(td, "/w")},
			wantNotAfter: caNotAfter,
		},
		{
			name:         "long TTL capped at the CA's expiry",
			at:           t0,
			params:       ca.X509Params{ID: spiffeid.RequireFromPath(td, "/w"), TTL: 48 * time.Hour},
			wantNotAfter: caNotAfter,
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			clk.t = c.at
			c.params.PublicKey = key.Public()
			chain, err := authority.SignX509SVID(ctx, c.params)
			if err != nil {
				t.Fatal(err)
			}
			var raw [][]byte
			for _, cert := range chain {
				raw = append(raw, cert.Raw)
			}
			id, _, err := x509svid.ParseAndVerify(raw, x509bundle.FromX509Authorities(td, roots(authority.Bundle())), x509svid.WithTime(c.at))
			if err != nil {
				t.Fatalf("go-spiffe rejects the X509-SVID: %v", err)
			}
			leaf := chain[0]
			switch {
			case id != c.params.ID:
				t.Errorf("SPIFFE ID = %v, want %v", id, c.params.ID)
			case len(leaf.URIs) != 1:
				t.Errorf("leaf has %d URI SANs, want 1", len(leaf.URIs))
			case leaf.IsCA:
				t.Error("leaf is a CA")
			case leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0:
				t.Error("leaf lacks the digitalSignature key usage")
			case !slices.Equal(leaf.DNSNames, c.params.DNSNames):
				t.Errorf("DNS SANs = %v, want %v", leaf.DNSNames, c.params.DNSNames)
			case leaf.Subject.CommonName != c.wantCN:
				t.Errorf("CN = %q, want %q", leaf.Subject.CommonName, c.wantCN)
			case !leaf.NotAfter.Equal(c.wantNotAfter):
				t.Errorf("NotAfter = %v, want %v", leaf.NotAfter, c.wantNotAfter)
			case !leaf.NotBefore.Before(c.at):
				t.Errorf("NotBefore = %v, want before %v (clock skew)", leaf.NotBefore, c.at)
			}
			if !key.Public().(*ecdsa.PublicKey).Equal(leaf.PublicKey) {
				t.Error("leaf does not certify the requested public key")
			}
		})
	}
}

func TestSignX509SVIDErrors(t *testing.T) {
	authority, _, _ := newCA(t, ca.Config{})
	pub := newKey(t).Public()
	for _, c := range []struct {
		name   string
		params ca.X509Params
		want   string
	}{
		{"another trust domain", ca.X509Params{ID: spiffeid.RequireFromString("spiffe://other.org/w"), PublicKey: pub},
			`ca: SPIFFE ID "spiffe://other.org/w" is not in trust domain "example.org"`},
		{"no ID", ca.X509Params{PublicKey: pub}, `ca: SPIFFE ID "" is not in trust domain "example.org"`},
		{"no public key", ca.X509Params{ID: spiffeid.RequireFromPath(td, "/w")}, "ca: public key is required"},
	} {
		t.Run(c.name, func(t *testing.T) {
			chain, err := authority.SignX509SVID(t.Context(), c.params)
			if err == nil || err.Error() != c.want {
				t.Fatalf("error = %v, want %q", err, c.want)
			}
			if chain != nil {
				t.Error("a chain was returned with the error")
			}
		})
	}
}

// JWT-SVIDs are checked with go-spiffe, which validates expiry against the
// real time: these CAs run on the real clock.
func TestSignJWTSVID(t *testing.T) {
	for _, c := range []struct {
		keyType hsm.KeyType
		wantAlg string
	}{
		{"", "ES256"},
		{hsm.RSA2048, "RS256"},
		{hsm.ECP384, "ES384"},
	} {
		t.Run(string(c.keyType)+c.wantAlg, func(t *testing.T) {
			ctx := t.Context()
			authority, _, _ := newCA(t, ca.Config{JWTKeyType: c.keyType, JWTIssuer: "https://oidc.example.org", Clock: time.Now})
			id := spiffeid.RequireFromPath(td, "/w")
			audience := []string{"db", "cache"}
			token, iat, exp, err := authority.SignJWTSVID(ctx, id, audience, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if h := jwtHeader(t, token); h["alg"] != c.wantAlg || h["typ"] != "JWT" || h["kid"] != authority.Bundle().JWTAuthorities[0].KeyID {
				t.Errorf("header = %v, want alg %s, typ JWT and the bundle's kid", h, c.wantAlg)
			}
			svid, err := jwtsvid.ParseAndValidate(token, jwtBundle(authority.Bundle()), []string{"cache"})
			if err != nil {
				t.Fatalf("go-spiffe rejects the JWT-SVID: %v", err)
			}
			switch {
			case svid.ID != id:
				t.Errorf("ID = %v, want %v", svid.ID, id)
			case !slices.Equal(svid.Audience, audience):
				t.Errorf("audience = %v, want %v", svid.Audience, audience)
			case !svid.Expiry.Equal(exp):
				t.Errorf("expiry = %v, want the returned %v", svid.Expiry, exp)
			case exp.Sub(iat) != time.Minute:
				t.Errorf("lifetime = %v, want 1m", exp.Sub(iat))
			case svid.Claims["iss"] != "https://oidc.example.org":
				t.Errorf("iss = %v, want the configured issuer", svid.Claims["iss"])
			}
			if _, err := jwtsvid.ParseAndValidate(token, jwtBundle(authority.Bundle()), []string{"other"}); err == nil {
				t.Error("the JWT-SVID validates for an audience it does not name")
			}
		})
	}
}

func TestSignJWTSVIDLifetime(t *testing.T) {
	authority, clk, _ := newCA(t, ca.Config{CATTL: time.Hour, JWTSVIDTTL: 10 * time.Minute})
	keyExpiry := authority.Bundle().JWTAuthorities[0].ExpiresAt
	id := spiffeid.RequireFromPath(td, "/w")
	for _, c := range []struct {
		name    string
		at      time.Time
		ttl     time.Duration
		wantExp time.Time
	}{
		{"default TTL", t0, 0, t0.Add(10 * time.Minute)},
		{"explicit TTL", t0, 2 * time.Minute, t0.Add(2 * time.Minute)},
		{"issued at is truncated to the second", t0.Add(1500 * time.Millisecond), time.Minute, t0.Add(time.Second + time.Minute)},
		{"capped at the key's expiry", keyExpiry.Add(-time.Minute), 0, keyExpiry},
	} {
		t.Run(c.name, func(t *testing.T) {
			clk.t = c.at
			_, iat, exp, err := authority.SignJWTSVID(t.Context(), id, []string{"aud"}, c.ttl)
			if err != nil {
				t.Fatal(err)
			}
			if !exp.Equal(c.wantExp) || !iat.Equal(c.at.Truncate(time.Second)) {
				t.Errorf("iat, exp = %v, %v; want %v, %v", iat, exp, c.at.Truncate(time.Second), c.wantExp)
			}
		})
	}
}

func TestSignJWTSVIDErrors(t *testing.T) {
	authority, _, _ := newCA(t, ca.Config{})
	for _, c := range []struct {
		name     string
		id       spiffeid.ID
		audience []string
		want     string
	}{
		{"another trust domain", spiffeid.RequireFromString("spiffe://other.org/w"), []string{"aud"},
			`ca: SPIFFE ID "spiffe://other.org/w" is not in trust domain "example.org"`},
		{"no audience", spiffeid.RequireFromPath(td, "/w"), nil, "ca: at least one audience is required"},
	} {
		t.Run(c.name, func(t *testing.T) {
			token, _, _, err := authority.SignJWTSVID(t.Context(), c.id, c.audience, 0)
			if err == nil || err.Error() != c.want {
				t.Fatalf("error = %v, want %q", err, c.want)
			}
			if token != "" {
				t.Error("a token was returned with the error")
			}
		})
	}
}
