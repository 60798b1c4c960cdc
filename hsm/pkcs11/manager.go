//go:build cgo

package pkcs11

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThalesIgnite/crypto11"
	p11 "github.com/miekg/pkcs11"

	"github.com/plinth-id/plinth/hsm"
	"github.com/plinth-id/plinth/hsm/internal/softkey"
)

var (
	_ hsm.KeyManager = (*Manager)(nil)
	_ hsm.Deleter    = (*Manager)(nil)
	_ hsm.Attester   = (*Manager)(nil)
	_ hsm.Sweeper    = (*Manager)(nil)
)

// Manager holds keys on a PKCS#11 token. It implements hsm.KeyManager,
// hsm.Deleter, hsm.Attester and hsm.Sweeper, and it and its keys are safe for
// concurrent use.
//
// Signing takes no lock and looks nothing up: a key keeps its object handle
// and crypto11 signer, and crypto11 lends each signature a session from its
// pool. When the token or its sessions go away, the call that notices
// reopens the token and tries once more; while that fails, calls fail fast
// with errors wrapping ErrUnavailable, and the manager tries again after a
// backoff. Lookups and changes of keys hold a per-token lock (see
// repair.go); a GenerateKey blocks GetKey and ListKeys of the same token
// while it runs (seconds for RSA-4096 on some tokens), never Sign.
type Manager struct {
	cfg  Config
	mod  *module
	lock *sync.RWMutex // the token's lock, shared by the Managers of this process

	cur        atomic.Pointer[state]
	failures   atomic.Int32 // reopens since the last call that worked
	reopenMu   sync.Mutex   // serializes reopening; guards lastReopen
	lastReopen time.Time
	attempts   atomic.Int64 // reopen attempts, for tests
	reopens    atomic.Int64 // successful reopens, for tests
	closed     atomic.Bool

	keysMu sync.Mutex
	keys   map[string]*key // the keys handed out, by ID

	crash func(step string) error // tests only: interrupts GenerateKey after a step
}

// state is the manager's connection to the token: conn, or, while the token
// is unavailable, why (err) and when to try again.
type state struct {
	conn    *conn
	err     error
	retryAt time.Time
}

// New opens the token and logs in. It fails if the module cannot be loaded,
// the token is not there (the error lists the tokens that are) or the PIN is
// wrong. Before it returns, it finishes or undoes any key replacement that a
// crash interrupted (see Sweep).
//
// Caveat: PKCS#11 logs in a whole process. While another Manager (or other
// PKCS#11 code) of this process is logged in to the token, the token does
// not check the PIN again, so a wrong PIN is noticed only at the next start.
func New(c Config) (*Manager, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	mod, err := loadModule(c.Module)
	if err != nil {
		return nil, err
	}
	m := &Manager{
		cfg:  c,
		mod:  mod,
		lock: tokenLock(mod, c.TokenLabel),
		keys: make(map[string]*key),
	}
	mod.mu.Lock()
	cn, err := mod.open(c.TokenLabel, c.PIN)
	mod.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("pkcs11: %w", err)
	}
	m.cur.Store(&state{conn: cn})
	m.lock.Lock()
	_, err = m.repair()
	m.lock.Unlock()
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("pkcs11: could not finish the key replacements an earlier process left unfinished: %w", err)
	}
	return m, nil
}

// Close closes the manager's sessions. Its keys stop signing. If it was the
// last user of the module in this process, the module is finalized.
func (m *Manager) Close() error {
	m.reopenMu.Lock()
	defer m.reopenMu.Unlock()
	if m.closed.Swap(true) {
		return nil
	}
	s := m.cur.Swap(&state{err: errClosed, retryAt: time.Unix(1<<62, 0)})
	if s.conn != nil {
		m.mod.mu.Lock()
		m.mod.close(s.conn)
		m.mod.mu.Unlock()
	}
	return nil
}

// GenerateKey generates a key pair of type t on the token, labelled with the
// ID (CKA_LABEL and CKA_ID, after KeyIDPrefix), and replaces any key that
// had the ID: a crash at any point leaves the ID with the old key or the new
// one (see repair.go). The private key is generated with CKA_TOKEN,
// CKA_SENSITIVE and CKA_PRIVATE set and CKA_EXTRACTABLE clear, and may only
// sign. Keys returned earlier under the ID fail to sign once it is replaced.
func (m *Manager) GenerateKey(ctx context.Context, id string, t hsm.KeyType) (hsm.Key, error) {
	if err := checkID(id); err != nil {
		return nil, fmt.Errorf("pkcs11: %w", err)
	}
	if _, err := hsm.ParseKeyType(string(t)); err != nil {
		return nil, fmt.Errorf("pkcs11: could not generate key %q: %w", id, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("pkcs11: could not generate key %q: %w", id, err)
	}
	m.lock.Lock()
	defer m.lock.Unlock()
	k, err := m.generate(id, t)
	if err != nil {
		return nil, fmt.Errorf("pkcs11: could not generate key %q: %w", id, err)
	}
	return k, nil
}

// generate runs the steps of repair.go. The caller holds m.lock.
func (m *Manager) generate(id string, t hsm.KeyType) (*key, error) {
	label := m.cfg.KeyIDPrefix + id

	// 1. The new pair, under its pending label. A retry after a reopen
	// gets a label of its own: if the first try made a pair after all,
	// that pair loses (see planRepair) instead of sharing the label.
	var (
		pending string
		signer  crypto11.Signer
		gen     *conn // the connection signer belongs to
	)
	if err := m.do(func(c *conn) (err error) {
		var tag [8]byte
		rand.Read(tag[:])
		pending = label + pendingMark + hex.EncodeToString(tag[:])
		gen = c
		signer, err = c.generate(pending, t)
		return err
	}); err != nil {
		return nil, err
	}
	if err := m.step("generated"); err != nil {
		return nil, err
	}

	// 2. The commit point: the old private key goes.
	err := m.do(func(c *conn) error { return c.destroyLabel(p11.CKO_PRIVATE_KEY, label) })
	if err != nil {
		// If the old private key is still there, the new key lost: take
		// it away. If that cannot be told now, a repair will decide.
		m.do(func(c *conn) error {
			if hs, err := c.findLabel(p11.CKO_PRIVATE_KEY, label); err != nil || len(hs) == 0 {
				return err
			}
			return errors.Join(c.destroyLabel(p11.CKO_PRIVATE_KEY, pending), c.destroyLabel(p11.CKO_PUBLIC_KEY, pending))
		})
		return nil, err
	}
	m.forget(id)
	if err := m.step("deleted-old-private"); err != nil {
		return nil, err
	}

	// 3.–5. The old public key goes, and the new pair takes the label.
	var (
		bound *binding
		steps = []struct {
			name string
			do   func(c *conn) error
		}{
			{"deleted-old-public", func(c *conn) error { return c.destroyLabel(p11.CKO_PUBLIC_KEY, label) }},
			{"relabelled-public", func(c *conn) error { return c.relabelLabel(p11.CKO_PUBLIC_KEY, pending, label) }},
			{"relabelled-private", func(c *conn) error {
				if err := c.relabelLabel(p11.CKO_PRIVATE_KEY, pending, label); err != nil {
					return err
				}
				h, err := c.privateKey(label)
				if err == nil && c == gen {
					bound = &binding{conn: c, signer: signer, handle: h}
				}
				return err
			}},
		}
	)
	for _, s := range steps {
		if err := m.do(s.do); err != nil {
			return nil, fmt.Errorf("the new key replaced the old one, but taking over its label was interrupted (the next lookup of the key finishes it): %w", err)
		}
		if err := m.step(s.name); err != nil {
			return nil, err
		}
	}
	k := &key{m: m, id: id, label: label, typ: t, pub: signer.Public()}
	k.bound.Store(bound)
	m.keysMu.Lock()
	m.keys[id] = k
	m.keysMu.Unlock()
	return k, nil
}

// step lets a test interrupt GenerateKey after a step, as a crash would.
func (m *Manager) step(name string) error {
	if m.crash == nil {
		return nil
	}
	return m.crash(name)
}

// GetKey returns the key with the id, or an error wrapping hsm.ErrNotFound.
// It asks the token every time, so a key deleted behind the manager's back
// is not found, and returns the same Key again while the token holds the
// same key pair under the ID.
func (m *Manager) GetKey(ctx context.Context, id string) (hsm.Key, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("pkcs11: could not get key %q: %w", id, err)
	}
	if id == "" {
		return nil, fmt.Errorf("pkcs11: key %q not found on token %q: %w", id, m.cfg.TokenLabel, hsm.ErrNotFound)
	}
	m.lock.RLock()
	k, err := m.get(id)
	m.lock.RUnlock()
	if errors.Is(err, errMissing) {
		// An interrupted replacement may have left the key under its
		// pending label: finish it, and look again.
		m.lock.Lock()
		if _, err = m.repair(); err == nil {
			k, err = m.get(id)
		}
		m.lock.Unlock()
	}
	switch {
	case errors.Is(err, errMissing):
		return nil, fmt.Errorf("pkcs11: key %q not found on token %q: %w", id, m.cfg.TokenLabel, hsm.ErrNotFound)
	case err != nil:
		return nil, fmt.Errorf("pkcs11: could not get key %q: %w", id, err)
	}
	return k, nil
}

func (m *Manager) get(id string) (k *key, err error) {
	err = m.do(func(c *conn) (err error) {
		k, err = m.lookup(c, id)
		return err
	})
	return k, err
}

// errMissing says that the token is there but has no usable key pair under a
// label.
var errMissing = errors.New("no such key")

// unusableError says that a label holds a private key that this package
// cannot use. ListKeys leaves such keys out.
type unusableError struct{ msg string }

func (e *unusableError) Error() string { return e.msg }

// lookup finds the key with the id on c, reusing the key handed out earlier
// if it is the same object.
func (m *Manager) lookup(c *conn, id string) (*key, error) {
	label := m.cfg.KeyIDPrefix + id
	h, err := c.privateKey(label)
	if err != nil {
		return nil, err
	}
	signer, err := c.c11.FindKeyPair(nil, []byte(label))
	if err != nil {
		return nil, fmt.Errorf("C_FindObjects: %w", err)
	}
	if signer == nil {
		if err := c.probe(); err != nil {
			return nil, err
		}
		return nil, &unusableError{fmt.Sprintf("token %q has a private key labelled %q but no public key with its CKA_ID", c.token, label)}
	}
	typ := hsm.KeyType(softkey.Describe(signer.Public()))
	if _, err := hsm.ParseKeyType(string(typ)); err != nil {
		return nil, &unusableError{fmt.Sprintf("the key labelled %q on token %q is %s, not a type Plinth uses", label, c.token, typ)}
	}
	// Hand out the same key again only if the token still holds its
	// public key under the label: a handle alone may be reused for
	// another object.
	m.keysMu.Lock()
	old := m.keys[id]
	m.keysMu.Unlock()
	if old != nil && old.typ == typ && samePublic(old.pub, signer.Public()) {
		if b := old.bound.Load(); b == nil || b.conn != c || b.handle != h {
			old.bound.Store(&binding{conn: c, signer: signer, handle: h}) // after a reopen
		}
		return old, nil
	}
	b := &binding{conn: c, signer: signer, handle: h}
	k := &key{m: m, id: id, label: label, typ: typ, pub: signer.Public()}
	k.bound.Store(b)
	m.keysMu.Lock()
	m.keys[id] = k
	m.keysMu.Unlock()
	return k, nil
}

// forget drops the key handed out under the id, which this manager is
// destroying or replacing. The key unbinds, so that it never signs through a
// handle that the token may reuse for another object; it finds its ID gone,
// or holding another key, and says so.
func (m *Manager) forget(id string) {
	m.keysMu.Lock()
	if k := m.keys[id]; k != nil {
		k.bound.Store(nil)
		delete(m.keys, id)
	}
	m.keysMu.Unlock()
}

// ListKeys returns the keys under the manager's prefix, sorted by ID. Private
// keys it cannot use (no public half, a type Plinth does not use) are left
// out.
func (m *Manager) ListKeys(ctx context.Context) ([]hsm.Key, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("pkcs11: could not list keys: %w", err)
	}
	m.lock.RLock()
	keys, unfinished, err := m.list()
	m.lock.RUnlock()
	if err == nil && unfinished {
		m.lock.Lock()
		if _, err = m.repair(); err == nil {
			keys, _, err = m.list()
		}
		m.lock.Unlock()
	}
	if err != nil {
		return nil, fmt.Errorf("pkcs11: could not list keys: %w", err)
	}
	return keys, nil
}

// list lists the keys, and says whether an interrupted replacement is
// waiting for a repair to make its key visible.
func (m *Manager) list() (keys []hsm.Key, unfinished bool, err error) {
	err = m.do(func(c *conn) error {
		keys, unfinished = nil, false
		objs, err := c.objects(m.cfg.KeyIDPrefix)
		if err != nil {
			return err
		}
		acts, _ := planRepair(objs)
		unfinished = slices.ContainsFunc(acts, func(a action) bool { return a.relabel != "" })
		ids := make(map[string]bool)
		for _, o := range objs {
			if id, tag := parseLabel(o.label); o.private && tag == "" {
				ids[id] = true
			}
		}
		for _, id := range slices.Sorted(maps.Keys(ids)) {
			k, err := m.lookup(c, id)
			if ue := (*unusableError)(nil); errors.Is(err, errMissing) || errors.As(err, &ue) {
				continue
			}
			if err != nil {
				return err
			}
			keys = append(keys, k)
		}
		if len(ids) == 0 {
			// An empty answer may be SoftHSM's for a token that went away.
			return c.probe()
		}
		return nil
	})
	if keys == nil {
		keys = []hsm.Key{}
	}
	return keys, unfinished, err
}

// DeleteKey destroys the key pair with the id, private key first, or returns
// an error wrapping hsm.ErrNotFound if there is none. Keys returned earlier
// under the id fail to sign.
func (m *Manager) DeleteKey(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pkcs11: could not delete key %q: %w", id, err)
	}
	if id == "" {
		return fmt.Errorf("pkcs11: key %q not found on token %q: %w", id, m.cfg.TokenLabel, hsm.ErrNotFound)
	}
	m.lock.Lock()
	defer m.lock.Unlock()
	label := m.cfg.KeyIDPrefix + id
	del := func(c *conn) error {
		if _, err := c.privateKey(label); err != nil {
			return err
		}
		if err := c.destroyLabel(p11.CKO_PRIVATE_KEY, label); err != nil {
			return err
		}
		return c.destroyLabel(p11.CKO_PUBLIC_KEY, label)
	}
	err := m.do(del)
	if errors.Is(err, errMissing) {
		// Perhaps a replacement left the key under its pending label.
		if _, err = m.repair(); err == nil {
			err = m.do(del)
		}
	}
	switch {
	case errors.Is(err, errMissing):
		return fmt.Errorf("pkcs11: key %q not found on token %q: %w", id, m.cfg.TokenLabel, hsm.ErrNotFound)
	case err != nil:
		return fmt.Errorf("pkcs11: could not delete key %q: %w", id, err)
	}
	m.forget(id)
	return nil
}

// Sweep finishes or undoes the key replacements that a crash or an outage
// interrupted (see repair.go), removing the pending keys that lost and the
// public halves of replaced keys, and returns how many keys it removed. New and GetKey do the same when they need to; the server
// calls Sweep periodically for the rest.
func (m *Manager) Sweep(ctx context.Context) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("pkcs11: could not sweep: %w", err)
	}
	m.lock.Lock()
	defer m.lock.Unlock()
	n, err := m.repair()
	if err != nil {
		return n, fmt.Errorf("pkcs11: could not sweep: %w", err)
	}
	return n, nil
}

// repair applies planRepair to the manager's namespace. The caller holds
// m.lock for writing.
func (m *Manager) repair() (removed int, err error) {
	err = m.do(func(c *conn) error {
		objs, err := c.objects(m.cfg.KeyIDPrefix)
		if err != nil {
			return err
		}
		acts, n := planRepair(objs)
		if len(acts) > 0 {
			m.cfg.Log.Info("finishing interrupted key replacements",
				"token", m.cfg.TokenLabel, "key_id_prefix", m.cfg.KeyIDPrefix, "objects", len(acts), "keys_removed", n)
		}
		for _, a := range acts {
			h := p11.ObjectHandle(a.handle)
			if a.destroy {
				err = c.destroy(h)
			} else {
				err = c.relabel(h, m.cfg.KeyIDPrefix+a.relabel)
				m.forget(a.relabel)
			}
			if err != nil {
				return err
			}
		}
		removed = n
		return nil
	})
	return removed, err
}

// Provenance returns the token's own account of the key with the id: where
// it is and the attributes of its private key object. GeneratedInside is
// CKA_LOCAL; NonExtractable is CKA_NEVER_EXTRACTABLE and CKA_SENSITIVE and
// not CKA_EXTRACTABLE.
//
// Caveat: these are the token's claims, worth what the token is. SoftHSM
// makes them about a file on disk; a certified HSM backs them with hardware.
func (m *Manager) Provenance(ctx context.Context, id string) (*hsm.Provenance, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("pkcs11: could not read the provenance of key %q: %w", id, err)
	}
	if id == "" {
		return nil, fmt.Errorf("pkcs11: key %q not found on token %q: %w", id, m.cfg.TokenLabel, hsm.ErrNotFound)
	}
	label := m.cfg.KeyIDPrefix + id
	names := []struct {
		typ  uint
		name string
	}{
		{p11.CKA_LOCAL, "CKA_LOCAL"},
		{p11.CKA_NEVER_EXTRACTABLE, "CKA_NEVER_EXTRACTABLE"},
		{p11.CKA_SENSITIVE, "CKA_SENSITIVE"},
		{p11.CKA_EXTRACTABLE, "CKA_EXTRACTABLE"},
		{p11.CKA_ALWAYS_SENSITIVE, "CKA_ALWAYS_SENSITIVE"},
	}
	flags := make(map[string]bool)
	var info p11.TokenInfo
	m.lock.RLock()
	err := m.do(func(c *conn) error {
		h, err := c.privateKey(label)
		if err != nil {
			return err
		}
		types := make([]uint, len(names))
		for i, n := range names {
			types[i] = n.typ
		}
		attrs, err := c.attrs(h, types...)
		if err != nil {
			return err
		}
		for i, a := range attrs {
			flags[names[i].name] = len(a.Value) == 1 && a.Value[0] != 0
		}
		if info, err = c.mod.raw.GetTokenInfo(c.slot); err != nil {
			return fmt.Errorf("C_GetTokenInfo: %w", err)
		}
		return nil
	})
	m.lock.RUnlock()
	switch {
	case errors.Is(err, errMissing):
		return nil, fmt.Errorf("pkcs11: key %q not found on token %q: %w", id, m.cfg.TokenLabel, hsm.ErrNotFound)
	case err != nil:
		return nil, fmt.Errorf("pkcs11: could not read the provenance of key %q: %w", id, err)
	}
	p := &hsm.Provenance{
		Backend:         "pkcs11",
		Location:        uri(m.cfg.TokenLabel, label),
		GeneratedInside: flags["CKA_LOCAL"],
		NonExtractable:  flags["CKA_NEVER_EXTRACTABLE"] && flags["CKA_SENSITIVE"] && !flags["CKA_EXTRACTABLE"],
		Attributes: map[string]string{
			"TokenManufacturer": info.ManufacturerID,
			"TokenModel":        info.Model,
			"TokenSerial":       info.SerialNumber,
		},
	}
	for name, v := range flags {
		p.Attributes[name] = strconv.FormatBool(v)
	}
	return p, nil
}

// do runs op on the token's connection. If op fails because the token or
// its session is gone (or a reset closed the connection), do reopens the
// token and runs op once more. While the token is unavailable, do fails fast
// with an error wrapping ErrUnavailable.
func (m *Manager) do(op func(c *conn) error) error {
	c, err := m.conn()
	if err != nil {
		return err
	}
	err = op(c)
	if err == nil {
		m.worked()
		return nil
	}
	v, why := judge(c, err)
	if v == own {
		return err
	}
	if c, err = m.recover(c, v, why); err != nil {
		return err
	}
	err = op(c)
	if err == nil {
		m.worked()
		return nil
	}
	if v, why = judge(c, err); v == own {
		return err
	}
	if _, rerr := m.recover(c, v, why); rerr != nil {
		return rerr
	}
	return &unavailableError{token: m.cfg.TokenLabel, cause: err}
}

func (m *Manager) worked() {
	if m.failures.Load() != 0 {
		m.failures.Store(0)
	}
}

// conn returns the open connection, or reopens the token if it is
// unavailable and its backoff has passed.
func (m *Manager) conn() (*conn, error) {
	s := m.cur.Load()
	if s.conn != nil {
		return s.conn, nil
	}
	if m.closed.Load() || m.cfg.Clock().Before(s.retryAt) {
		return nil, s.err
	}
	return m.recover(nil, lost, "")
}

// recover replaces c, a connection that a call found lost (or stale), or
// reopens the token after an outage (c nil). It reopens at once after a
// call that worked; after a reopen that did not help, it waits the backoff.
func (m *Manager) recover(c *conn, v verdict, why string) (*conn, error) {
	m.reopenMu.Lock()
	defer m.reopenMu.Unlock()
	if m.closed.Load() {
		return nil, errClosed
	}
	now := m.cfg.Clock()
	s := m.cur.Load()
	switch {
	case s.conn != nil && s.conn != c:
		return s.conn, nil // another call reopened it
	case s.conn == nil && now.Before(s.retryAt):
		return nil, s.err // another call failed to reopen it
	case s.conn == nil:
		c, v = nil, lost // the outage's backoff has passed
	case v == lost:
		if n := int(m.failures.Load()); n > 0 && now.Before(m.lastReopen.Add(m.cfg.backoff(n))) {
			// Reopened a moment ago, and lost again: wait.
			m.mod.mu.Lock()
			m.mod.close(c)
			m.mod.mu.Unlock()
			err := &unavailableError{token: m.cfg.TokenLabel, cause: errors.New(why)}
			retryAt := m.lastReopen.Add(m.cfg.backoff(n))
			m.cur.Store(&state{err: err, retryAt: retryAt})
			m.cfg.Log.Warn("PKCS#11 token unavailable; signing fails until it is back",
				"token", m.cfg.TokenLabel, "reason", why, "retry_in", retryAt.Sub(now))
			return nil, err
		}
	}
	m.lastReopen = now
	m.attempts.Add(1)
	if v == lost {
		m.failures.Add(1)
	}
	nc, err := m.mod.reopen(c, v == lost, m.cfg.TokenLabel, m.cfg.PIN)
	if err != nil {
		n := max(int(m.failures.Load()), 1)
		cause := fmt.Errorf("reopening it failed: %w", err)
		if why != "" {
			cause = fmt.Errorf("%s; reopening it failed: %w", why, err)
		}
		uerr := &unavailableError{token: m.cfg.TokenLabel, cause: cause}
		m.cur.Store(&state{err: uerr, retryAt: now.Add(m.cfg.backoff(n))})
		m.cfg.Log.Warn("PKCS#11 token unavailable; signing fails until it is back",
			"token", m.cfg.TokenLabel, "reason", cause.Error(), "retry_in", m.cfg.backoff(n))
		return nil, uerr
	}
	m.reopens.Add(1)
	m.cur.Store(&state{conn: nc})
	if v == lost {
		m.cfg.Log.Info("PKCS#11 token reopened", "token", m.cfg.TokenLabel, "attempt", m.failures.Load())
	}
	return nc, nil
}
