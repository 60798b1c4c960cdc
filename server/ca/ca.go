package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/plinth-id/plinth/hsm"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Journal persists the CA's slot states. Load returns (nil, nil) when
// nothing was saved yet.
type Journal interface {
	Load(ctx context.Context) ([]byte, error)
	Save(ctx context.Context, data []byte) error
}

// Config is what New needs. Zero durations take SPIRE's defaults.
type Config struct {
	TrustDomain spiffeid.TrustDomain
	Keys        hsm.KeyManager
	Journal     Journal
	CATTL       time.Duration // default 24h
	X509SVIDTTL time.Duration // default 1h
	JWTSVIDTTL  time.Duration // default 5m
	KeyType     hsm.KeyType   // default ec-p256
	JWTKeyType  hsm.KeyType   // default KeyType
	Subject     pkix.Name
	JWTIssuer   string
	Clock       func() time.Time // default time.Now
	Log         *slog.Logger
	// ProbeInterval is how often Run rotates and checks that the active
	// keys can sign (default 10s).
	ProbeInterval time.Duration
	// Upstream, when set, signs the server's CA certificates instead of
	// self-signing them, so the trust bundle is the upstream's roots.
	Upstream *Upstream
}

// Upstream is an existing (corporate) CA that signs the server's CA.
type Upstream struct {
	Cert *x509.Certificate // the upstream CA certificate that signs
	Key  crypto.Signer     // its key: a file or an HSM key
	// Intermediates are the certificates between Cert and a root, Cert
	// included when it is not itself a root; they travel in every chain.
	Intermediates []*x509.Certificate
	// Roots are the trust bundle.
	Roots []*x509.Certificate
}

// Status is the state of an authority slot.
type Status string

const (
	Prepared Status = "prepared"
	Active   Status = "active"
	Old      Status = "old"
)

// authority is one journal record: a key slot and what it signs with.
type authority struct {
	Slot      string    `json:"slot"`
	KeyID     string    `json:"key_id"`
	Status    Status    `json:"status"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	CertDER   []byte    `json:"cert_der,omitempty"`   // X.509 authorities
	PublicDER []byte    `json:"public_der,omitempty"` // JWT authorities (PKIX)
	KID       string    `json:"kid,omitempty"`
	Tainted   bool      `json:"tainted,omitempty"`
}

type journal struct {
	X509     []*authority `json:"x509"`
	JWT      []*authority `json:"jwt"`
	Sequence uint64       `json:"sequence"`
	// created lists the keys a change being prepared generated, to delete
	// if the change is not saved. Never saved itself.
	created []string
}

// signer is an active authority ready to sign.
type x509Signer struct {
	cert  *x509.Certificate
	key   hsm.Key
	chain []*x509.Certificate // cert, then the upstream intermediates
}

type jwtSigner struct {
	kid      string
	alg      string
	notAfter time.Time
	key      hsm.Key
}

// CA signs SVIDs for one trust domain. It is safe for concurrent use; the
// signing path takes no lock.
type CA struct {
	c Config

	mu      sync.Mutex // guards j and rotation
	j       journal
	changed chan struct{}

	x509   atomic.Pointer[x509Signer]
	jwt    atomic.Pointer[jwtSigner]
	bundle atomic.Pointer[Bundle]
	// unhealthy holds why the active keys cannot sign, nil while they can.
	unhealthy atomic.Pointer[error]
}

// New loads the CA's journal, or creates the first X.509 and JWT authorities
// when there is none, and checks that every key the journal names is still
// held by the key manager.
func New(ctx context.Context, c Config) (*CA, error) {
	if c.TrustDomain.IsZero() {
		return nil, errors.New("ca: trust domain is required")
	}
	if c.Keys == nil || c.Journal == nil {
		return nil, errors.New("ca: key manager and journal are required")
	}
	if c.CATTL == 0 {
		c.CATTL = 24 * time.Hour
	}
	if c.X509SVIDTTL == 0 {
		c.X509SVIDTTL = time.Hour
	}
	if c.JWTSVIDTTL == 0 {
		c.JWTSVIDTTL = 5 * time.Minute
	}
	if c.KeyType == "" {
		c.KeyType = hsm.ECP256
	}
	if c.JWTKeyType == "" {
		c.JWTKeyType = c.KeyType
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.Subject.String() == "" { // only an empty subject takes the default: a lone common name is kept
		c.Subject = pkix.Name{Country: []string{"US"}, Organization: []string{"SPIFFE"}}
	}
	ca := &CA{c: c, changed: make(chan struct{})}
	data, err := c.Journal.Load(ctx)
	if err != nil {
		return nil, fmt.Errorf("ca: could not load journal: %w", err)
	}
	if data != nil {
		if err := json.Unmarshal(data, &ca.j); err != nil {
			return nil, fmt.Errorf("ca: journal is corrupt: %w", err)
		}
	}
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if err := ca.rotateLocked(ctx); err != nil {
		return nil, err
	}
	return ca, nil
}

// Run rotates the authorities as they age, until ctx ends.
func (ca *CA) Run(ctx context.Context) error {
	interval := ca.c.ProbeInterval
	if interval <= 0 {
		interval = 10 * time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		ca.probe()
		ca.mu.Lock()
		err := ca.rotateLocked(ctx)
		ca.mu.Unlock()
		if err != nil {
			// A failed rotation is retried on the next tick; the active
			// authority keeps signing meanwhile.
			ca.c.Log.Error("CA rotation failed; will retry", "error", err)
		}
	}
}

// Rotate runs one rotation step now (prepare, activate, prune as due).
func (ca *CA) Rotate(ctx context.Context) error {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	return ca.rotateLocked(ctx)
}

func (ca *CA) rotateLocked(ctx context.Context) error {
	now := ca.c.Clock()
	// Work on a copy and keep it only once it is saved: a step that fails
	// half way (a key not generated, the journal not saved) leaves ca.j as it
	// was, so the next step retries it whole instead of finding nothing to do.
	j := ca.j.clone()
	changed := false
	for _, kind := range []string{"x509", "jwt"} {
		list := j.list(kind)
		// Drop authorities that expired: nothing they signed is still valid.
		kept := (*list)[:0]
		for _, a := range *list {
			if now.Before(a.NotAfter) {
				kept = append(kept, a)
			} else {
				changed = true
				ca.c.Log.Info("authority expired and removed from bundle", "kind", kind, "slot", a.Slot)
			}
		}
		*list = kept
		active := find(*list, Active)
		prepared := find(*list, Prepared)
		if active == nil && prepared != nil {
			prepared.Status = Active
			active, prepared, changed = prepared, nil, true
		}
		if active == nil {
			a, err := ca.newAuthority(ctx, &j, kind, freeSlot(*list), now)
			if err != nil {
				return err
			}
			a.Status = Active
			*list = append(*list, a)
			active, changed = a, true
		}
		if prepared == nil && !now.Before(PrepareTime(active.NotBefore, active.NotAfter)) {
			if slot := freeSlot(*list); slot != "" {
				a, err := ca.newAuthority(ctx, &j, kind, slot, now)
				if err != nil {
					return err
				}
				a.Status = Prepared
				*list = append(*list, a)
				prepared, changed = a, true
				ca.c.Log.Info("authority prepared and published in the bundle", "kind", kind, "slot", a.Slot, "not_after", a.NotAfter)
			}
		}
		if prepared != nil && !now.Before(ActivateTime(active.NotBefore, active.NotAfter)) {
			active.Status, prepared.Status = Old, Active
			changed = true
			ca.c.Log.Info("authority activated", "kind", kind, "slot", prepared.Slot, "previous", active.Slot)
		}
	}
	if changed {
		return ca.commitLocked(ctx, j)
	}
	// The bundle carries the sequence of the journal it was built from: a
	// load that failed after the journal was saved is retried too.
	if b := ca.bundle.Load(); b == nil || b.Sequence != ca.j.Sequence {
		if err := ca.loadSignersLocked(ctx); err != nil {
			return err
		}
	}
	return nil
}

// commitLocked saves j as the journal and points the signers at it. If the
// save fails, the keys j created are deleted again, so a failed prepare
// leaves no orphaned key behind.
func (ca *CA) commitLocked(ctx context.Context, j journal) error {
	j.Sequence++
	data, err := json.Marshal(&j)
	if err == nil {
		err = ca.c.Journal.Save(ctx, data)
	}
	if err != nil {
		ca.discard(ctx, j.created)
		return fmt.Errorf("ca: could not save journal: %w", err)
	}
	j.created = nil
	ca.j = j
	return ca.loadSignersLocked(ctx)
}

// discard deletes keys made for a change that was not recorded.
func (ca *CA) discard(ctx context.Context, ids []string) {
	d, ok := ca.c.Keys.(hsm.Deleter)
	for _, id := range ids {
		if !ok {
			ca.c.Log.Warn("key made for an unrecorded CA change stays in the key manager (it cannot delete keys); the next change of this slot replaces it", "key_id", id)
			continue
		}
		if err := d.DeleteKey(ctx, id); err != nil {
			ca.c.Log.Error("could not delete the key of an unrecorded CA change; delete it by hand", "key_id", id, "error", err)
		}
	}
}

func (j *journal) list(kind string) *[]*authority {
	if kind == "x509" {
		return &j.X509
	}
	return &j.JWT
}

// clone returns a copy of j whose authorities can be changed without
// changing j's.
func (j *journal) clone() journal {
	c := journal{Sequence: j.Sequence}
	for _, a := range j.X509 {
		a := *a
		c.X509 = append(c.X509, &a)
	}
	for _, a := range j.JWT {
		a := *a
		c.JWT = append(c.JWT, &a)
	}
	return c
}

func find(list []*authority, s Status) *authority {
	for _, a := range list {
		if a.Status == s {
			return a
		}
	}
	return nil
}

// freeSlot returns a slot no active or prepared authority uses. An old
// authority does not hold its slot: it stays in the bundle until it
// expires or is revoked, but its key is replaced when the slot is reused.
func freeSlot(list []*authority) string {
	used := map[string]bool{}
	for _, a := range list {
		if a.Status == Active || a.Status == Prepared {
			used[a.Slot] = true
		}
	}
	for _, s := range []string{"A", "B"} {
		if !used[s] {
			return s
		}
	}
	return ""
}

// newAuthority creates a key in slot and, for X.509, its self-signed CA
// certificate. The key replaces whatever the slot held: a slot is only reused
// once its previous authority has expired.
func (ca *CA) newAuthority(ctx context.Context, j *journal, kind, slot string, now time.Time) (*authority, error) {
	kt := ca.c.KeyType
	if kind == "jwt" {
		kt = ca.c.JWTKeyType
	}
	id := kind + "-ca-" + slot
	if kind == "jwt" {
		id = "jwt-signer-" + slot
	}
	key, err := ca.c.Keys.GenerateKey(ctx, id, kt)
	if err != nil {
		return nil, fmt.Errorf("ca: could not generate %s key %q: %w", kind, id, err)
	}
	j.created = append(j.created, id)
	for _, old := range *j.list(kind) {
		if old.KeyID == id {
			old.KeyID = "" // its key was just replaced: it signs nothing more
		}
	}
	a := &authority{Slot: slot, KeyID: id, NotBefore: now.Add(-30 * time.Second).Truncate(time.Second), NotAfter: now.Add(ca.c.CATTL).Truncate(time.Second)}
	pubDER, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, fmt.Errorf("ca: could not encode public key: %w", err)
	}
	if kind == "jwt" {
		a.PublicDER = pubDER
		a.KID = kidFor(pubDER)
		return a, nil
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	subject := ca.c.Subject
	subject.SerialNumber = serial.String()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               subject,
		NotBefore:             a.NotBefore,
		NotAfter:              a.NotAfter,
		URIs:                  []*url.URL{ca.c.TrustDomain.ID().URL()},
		BasicConstraintsValid: true,
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		// SubjectKeyId is left empty: Go derives it from the SHA-1 of the
		// public key (RFC 5280), which is SPIRE's X.509 authority ID.
	}
	parent, signer := tmpl, crypto.Signer(key)
	if up := ca.c.Upstream; up != nil {
		// An intermediate of the corporate CA: it cannot outlive it.
		parent, signer = up.Cert, up.Key
		if tmpl.NotAfter.After(up.Cert.NotAfter) {
			tmpl.NotAfter, a.NotAfter = up.Cert.NotAfter, up.Cert.NotAfter
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	if err != nil {
		return nil, fmt.Errorf("ca: could not sign the CA certificate: %w", err)
	}
	a.CertDER = der
	return a, nil
}

// loadSignersLocked points the signing path at the active authorities and
// rebuilds the bundle.
func (ca *CA) loadSignersLocked(ctx context.Context) error {
	b := &Bundle{TrustDomain: ca.c.TrustDomain, Sequence: ca.j.Sequence}
	for _, a := range ca.j.X509 {
		cert, err := x509.ParseCertificate(a.CertDER)
		if err != nil {
			return fmt.Errorf("ca: journal holds a corrupt certificate for slot %s: %w", a.Slot, err)
		}
		if ca.c.Upstream == nil {
			b.X509Authorities = append(b.X509Authorities, X509Authority{Cert: cert, Tainted: a.Tainted})
		}
		if a.Status == Active {
			key, err := ca.getKey(ctx, a.KeyID)
			if err != nil {
				return err
			}
			chain := []*x509.Certificate{cert}
			if up := ca.c.Upstream; up != nil {
				chain = append(chain, up.Intermediates...)
			}
			ca.x509.Store(&x509Signer{cert: cert, key: key, chain: chain})
		}
	}
	if up := ca.c.Upstream; up != nil {
		// The trust bundle is the corporate root: the server's own CA
		// certificates are intermediates that travel in every chain.
		for _, r := range up.Roots {
			b.X509Authorities = append(b.X509Authorities, X509Authority{Cert: r})
		}
	}
	for _, a := range ca.j.JWT {
		pub, err := x509.ParsePKIXPublicKey(a.PublicDER)
		if err != nil {
			return fmt.Errorf("ca: journal holds a corrupt JWT key for slot %s: %w", a.Slot, err)
		}
		b.JWTAuthorities = append(b.JWTAuthorities, JWTAuthority{KeyID: a.KID, PublicKey: pub, ExpiresAt: a.NotAfter, Tainted: a.Tainted})
		if a.Status == Active {
			key, err := ca.getKey(ctx, a.KeyID)
			if err != nil {
				return err
			}
			alg, err := jwtAlg(key.Public())
			if err != nil {
				return err
			}
			ca.jwt.Store(&jwtSigner{kid: a.KID, alg: alg, notAfter: a.NotAfter, key: key})
		}
	}
	ca.bundle.Store(b)
	close(ca.changed)
	ca.changed = make(chan struct{})
	return nil
}

func (ca *CA) getKey(ctx context.Context, id string) (hsm.Key, error) {
	key, err := ca.c.Keys.GetKey(ctx, id)
	if errors.Is(err, hsm.ErrNotFound) {
		return nil, fmt.Errorf("ca: the journal names key %q but the key manager does not hold it; if the keys file was lost, move the datastore's CA journal aside only if you accept a new trust bundle: %w", id, err)
	}
	if err != nil {
		return nil, fmt.Errorf("ca: could not get key %q: %w", id, err)
	}
	return key, nil
}

// Healthy returns nil while the active keys can sign, or why they cannot
// (an HSM that went away). It is checked every probe interval and after
// every failed signature, and clears by itself when signing works again.
func (ca *CA) Healthy() error {
	if p := ca.unhealthy.Load(); p != nil {
		return *p
	}
	return nil
}

func (ca *CA) setHealth(err error) {
	prev := ca.Healthy()
	if err == nil {
		ca.unhealthy.Store(nil)
		if prev != nil {
			ca.c.Log.Info("CA keys can sign again")
		}
		return
	}
	ca.unhealthy.Store(&err)
	if prev == nil {
		ca.c.Log.Error("CA keys cannot sign: new SVIDs cannot be issued; workloads keep their valid SVIDs", "error", err)
	}
}

// probe signs a fixed digest with each active key.
func (ca *CA) probe() {
	var err error
	if s := ca.x509.Load(); s != nil {
		err = probeKey("X.509", s.key)
	}
	if s := ca.jwt.Load(); s != nil && err == nil {
		err = probeKey("JWT", s.key)
	}
	ca.setHealth(err)
}

func probeKey(kind string, k hsm.Key) error {
	h := crypto.SHA256
	if k.Type() == hsm.ECP384 {
		h = crypto.SHA384
	}
	d := h.New()
	d.Write([]byte("plinth CA health probe"))
	if _, err := k.Sign(rand.Reader, d.Sum(nil), h); err != nil {
		return fmt.Errorf("ca: %s key %q cannot sign: %w", kind, k.ID(), err)
	}
	return nil
}

// Bundle returns the current trust bundle. The value is shared: do not modify it.
func (ca *CA) Bundle() *Bundle { return ca.bundle.Load() }

// Changed returns a channel closed at the next bundle change.
func (ca *CA) Changed() <-chan struct{} {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	return ca.changed
}

// X509Authority is a CA certificate in the bundle.
type X509Authority struct {
	Cert    *x509.Certificate
	Tainted bool
}

// JWTAuthority is a JWT signing public key in the bundle.
type JWTAuthority struct {
	KeyID     string
	PublicKey crypto.PublicKey
	ExpiresAt time.Time
	Tainted   bool
}

// Bundle is the trust domain's own trust bundle.
type Bundle struct {
	TrustDomain     spiffeid.TrustDomain
	X509Authorities []X509Authority
	JWTAuthorities  []JWTAuthority
	Sequence        uint64
}

// X509Params describes an X509-SVID to sign.
type X509Params struct {
	ID        spiffeid.ID
	PublicKey crypto.PublicKey
	DNSNames  []string
	TTL       time.Duration // 0 = the configured default
}

// SignX509SVID signs an X509-SVID and returns its chain (leaf first). The
// lifetime is capped so the SVID never outlives its signing authority.
func (ca *CA) SignX509SVID(ctx context.Context, p X509Params) ([]*x509.Certificate, error) {
	s := ca.x509.Load()
	if p.ID.IsZero() || p.ID.TrustDomain() != ca.c.TrustDomain {
		return nil, fmt.Errorf("ca: SPIFFE ID %q is not in trust domain %q", p.ID, ca.c.TrustDomain)
	}
	if p.PublicKey == nil {
		return nil, errors.New("ca: public key is required")
	}
	ttl := p.TTL
	if ttl <= 0 {
		ttl = ca.c.X509SVIDTTL
	}
	now := ca.c.Clock()
	notAfter := now.Add(ttl)
	if notAfter.After(s.cert.NotAfter) {
		notAfter = s.cert.NotAfter
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	subject := pkix.Name{Country: []string{"US"}, Organization: []string{"SPIRE"}}
	if len(p.DNSNames) > 0 {
		subject.CommonName = p.DNSNames[0]
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               subject,
		NotBefore:             now.Add(-backdate(ttl)),
		NotAfter:              notAfter,
		URIs:                  []*url.URL{p.ID.URL()},
		DNSNames:              p.DNSNames,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageKeyAgreement,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.cert, p.PublicKey, s.key)
	if err != nil {
		err = fmt.Errorf("ca: could not sign X509-SVID for %q: %w", p.ID, err)
		ca.setHealth(err)
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: could not parse signed X509-SVID: %w", err)
	}
	return append([]*x509.Certificate{leaf}, s.chain...), nil
}

// SignJWTSVID signs a JWT-SVID for id and audience. ttl 0 takes the
// configured default; the expiry is capped at the signing key's.
func (ca *CA) SignJWTSVID(ctx context.Context, id spiffeid.ID, audience []string, ttl time.Duration) (string, time.Time, time.Time, error) {
	s := ca.jwt.Load()
	if id.IsZero() || id.TrustDomain() != ca.c.TrustDomain {
		return "", time.Time{}, time.Time{}, fmt.Errorf("ca: SPIFFE ID %q is not in trust domain %q", id, ca.c.TrustDomain)
	}
	if len(audience) == 0 {
		return "", time.Time{}, time.Time{}, errors.New("ca: at least one audience is required")
	}
	if ttl <= 0 {
		ttl = ca.c.JWTSVIDTTL
	}
	now := ca.c.Clock().Truncate(time.Second)
	exp := now.Add(ttl)
	if exp.After(s.notAfter) {
		exp = s.notAfter
	}
	header, _ := json.Marshal(map[string]string{"alg": s.alg, "kid": s.kid, "typ": "JWT"})
	claims := map[string]any{"sub": id.String(), "aud": audience, "exp": exp.Unix(), "iat": now.Unix()}
	if ca.c.JWTIssuer != "" {
		claims["iss"] = ca.c.JWTIssuer
	}
	body, err := json.Marshal(claims)
	if err != nil {
		return "", time.Time{}, time.Time{}, fmt.Errorf("ca: could not encode JWT claims: %w", err)
	}
	signing := base64.RawURLEncoding.EncodeToString(header) + "." + base64.RawURLEncoding.EncodeToString(body)
	sig, err := signJWS(s.key, s.alg, []byte(signing))
	if err != nil {
		err = fmt.Errorf("ca: could not sign JWT-SVID for %q: %w", id, err)
		ca.setHealth(err)
		return "", time.Time{}, time.Time{}, err
	}
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig), now, exp, nil
}

// backdate is how far before now an SVID's validity starts, to absorb clock
// skew between hosts: 10 s, but never more than a tenth of its lifetime, so
// renewal at half life stays half way through the time the holder has it.
func backdate(ttl time.Duration) time.Duration {
	return min(10*time.Second, ttl/10)
}

func jwtAlg(pub crypto.PublicKey) (string, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return "ES256", nil
		case elliptic.P384():
			return "ES384", nil
		}
	case *rsa.PublicKey:
		return "RS256", nil
	}
	return "", fmt.Errorf("ca: unsupported JWT signing key %T", pub)
}

// signJWS signs input per RFC 7518: ECDSA signatures are the fixed-size
// R||S concatenation, not ASN.1.
func signJWS(key crypto.Signer, alg string, input []byte) ([]byte, error) {
	h := crypto.SHA256
	if alg == "ES384" {
		h = crypto.SHA384
	}
	hf := h.New()
	hf.Write(input)
	sig, err := key.Sign(rand.Reader, hf.Sum(nil), h)
	if err != nil || alg == "RS256" {
		return sig, err
	}
	var parsed struct{ R, S *big.Int }
	if _, err := asn1.Unmarshal(sig, &parsed); err != nil {
		return nil, fmt.Errorf("ca: signer returned a malformed ECDSA signature: %w", err)
	}
	size := 32
	if alg == "ES384" {
		size = 48
	}
	out := make([]byte, 2*size)
	parsed.R.FillBytes(out[:size])
	parsed.S.FillBytes(out[size:])
	return out, nil
}

func kidFor(pubDER []byte) string {
	sum := sha256.Sum256(pubDER)
	return base64.RawURLEncoding.EncodeToString(sum[:])[:32]
}

func newSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("ca: could not generate serial number: %w", err)
	}
	return serial.Add(serial, big.NewInt(1)), nil
}
