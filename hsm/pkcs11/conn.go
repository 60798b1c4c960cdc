//go:build cgo

package pkcs11

import (
	"crypto/elliptic"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/ThalesIgnite/crypto11"
	p11 "github.com/miekg/pkcs11"

	"github.com/plinth-id/plinth/hsm"
)

// PKCS#11 keeps its state per process: C_Initialize and C_Finalize act on
// the whole module, and a login belongs to the process and the token, not to
// a session. So the Managers of one module coordinate through one module
// value, and the Managers of one token share one lock.
//
// crypto11 counts its contexts per module path: the first one calls
// C_Initialize and the last one to close calls C_Finalize. This package
// opens and closes crypto11 contexts only under module.mu, checks the token
// and the PIN itself before crypto11 tries (crypto11 finalizes the module,
// under every other context, when opening a context fails), and never
// initializes the module while a context is open.

// module is a PKCS#11 module loaded in this process.
type module struct {
	name string   // the path as first configured, for messages
	path string   // canonical: crypto11 counts its contexts by path
	raw  *p11.Ctx // for admin sessions and the checks before crypto11 opens a token

	mu    sync.Mutex // serializes opening, closing and resetting contexts
	epoch uint64     // counts resets
	conns map[*conn]struct{}
}

var modules = struct {
	sync.Mutex
	m map[string]*module
}{m: make(map[string]*module)}

// loadModule loads the module at path, once per process.
func loadModule(path string) (*module, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("pkcs11: module %q: %w", path, err)
	}
	fi, err := os.Stat(abs)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("pkcs11: module %q does not exist", path)
	case err != nil:
		return nil, fmt.Errorf("pkcs11: module %q: %w", path, err)
	case fi.IsDir():
		return nil, fmt.Errorf("pkcs11: module %q is a directory, not a PKCS#11 library", path)
	}
	canonical, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return nil, fmt.Errorf("pkcs11: module %q: %w", path, err)
	}
	modules.Lock()
	defer modules.Unlock()
	if mod := modules.m[canonical]; mod != nil {
		return mod, nil
	}
	raw := p11.New(canonical)
	if raw == nil {
		return nil, fmt.Errorf("pkcs11: could not load module %q: it is not a PKCS#11 library, or a library it needs is missing", path)
	}
	mod := &module{name: path, path: canonical, raw: raw, conns: make(map[*conn]struct{})}
	modules.m[canonical] = mod
	return mod, nil
}

var tokenLocks = struct {
	sync.Mutex
	m map[string]*sync.RWMutex
}{m: make(map[string]*sync.RWMutex)}

// tokenLock returns the process-wide lock of a token. Changes to the keys
// (GenerateKey, DeleteKey, repairs) hold it; lookups hold it for reading, so
// that they never see a replacement half done.
func tokenLock(mod *module, token string) *sync.RWMutex {
	tokenLocks.Lock()
	defer tokenLocks.Unlock()
	k := mod.path + "\x00" + token
	l := tokenLocks.m[k]
	if l == nil {
		l = new(sync.RWMutex)
		tokenLocks.m[k] = l
	}
	return l
}

// conn is an open token: a crypto11 context (its session pool signs and
// generates) and an admin session of this package's own, which finds,
// relabels and destroys objects and reads their attributes.
type conn struct {
	mod    *module
	token  string
	c11    *crypto11.Context
	slot   uint
	epoch  uint64
	closed atomic.Bool

	mu      sync.Mutex // serializes the admin session
	session p11.SessionHandle
}

// errConnClosed is the error of an admin call on a conn that a reset closed.
var errConnClosed = errors.New("the token's connection was closed to be reopened")

// reopen opens the token again, closing old first (if not nil). With reset,
// it first closes every context on the module, so that the last one to close
// finalizes it and the new one initializes it afresh: some modules (SoftHSM
// among them) only see a token that went away and came back after a new
// C_Initialize. Other managers on the module notice at their next call and
// reopen without a reset.
func (mod *module) reopen(old *conn, reset bool, token, pin string) (*conn, error) {
	mod.mu.Lock()
	defer mod.mu.Unlock()
	if reset {
		mod.epoch++
		for c := range mod.conns {
			mod.close(c)
		}
	} else if old != nil {
		mod.close(old)
	}
	return mod.open(token, pin)
}

// open opens the token with the label and logs in. The caller holds mod.mu.
func (mod *module) open(token, pin string) (*conn, error) {
	// Check what crypto11 would fail on, with errors that say what to do.
	owned := false
	switch err := mod.raw.Initialize(); {
	case err == nil:
		owned = true // no context is open: finalize again before crypto11 initializes
	case isCKR(err, p11.CKR_CRYPTOKI_ALREADY_INITIALIZED):
	default:
		return nil, fmt.Errorf("could not initialize module %q: %s", mod.name, ckrText(err))
	}
	slot, err := mod.findSlot(token)
	if err == nil {
		err = mod.checkLogin(slot, token, pin)
	}
	if owned {
		if ferr := mod.raw.Finalize(); ferr != nil && err == nil {
			err = fmt.Errorf("could not finalize module %q after checking the token: %s", mod.name, ckrText(ferr))
		}
	}
	if err != nil {
		return nil, err
	}

	c11, err := crypto11.Configure(&crypto11.Config{Path: mod.path, TokenLabel: token, Pin: pin})
	if err != nil {
		if isCKR(err, p11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
			return nil, fmt.Errorf("could not open token %q: module %q was initialized by other code in this process, not through crypto11", token, mod.name)
		}
		return nil, fmt.Errorf("could not open token %q: %v", token, err)
	}
	c := &conn{mod: mod, token: token, c11: c11, epoch: mod.epoch}
	if c.slot, err = mod.findSlot(token); err == nil {
		c.session, err = mod.raw.OpenSession(c.slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
	}
	if err != nil {
		c11.Close()
		return nil, fmt.Errorf("could not open a session on token %q: %s", token, ckrText(err))
	}
	mod.conns[c] = struct{}{}
	return c, nil
}

// close closes c: its admin session, then its crypto11 context, which waits
// for the operations in flight and, if it is the module's last context,
// finalizes the module. The caller holds mod.mu.
func (mod *module) close(c *conn) {
	if c.closed.Swap(true) {
		return
	}
	c.mu.Lock()
	mod.raw.CloseSession(c.session) // fails if the session is already gone
	c.mu.Unlock()
	c.c11.Close() // fails if the module was finalized behind our back
	delete(mod.conns, c)
}

// findSlot returns the slot of the initialized token with the label.
func (mod *module) findSlot(token string) (uint, error) {
	slots, err := mod.raw.GetSlotList(true)
	if err != nil {
		return 0, fmt.Errorf("could not list the slots of module %q: %s", mod.name, ckrText(err))
	}
	var labels []string
	for _, slot := range slots {
		info, err := mod.raw.GetTokenInfo(slot)
		if err != nil || info.Flags&p11.CKF_TOKEN_INITIALIZED == 0 {
			continue
		}
		if info.Label == token {
			return slot, nil
		}
		labels = append(labels, fmt.Sprintf("%q", info.Label))
	}
	if len(labels) == 0 {
		return 0, fmt.Errorf("token %q not found in module %q (no initialized token is present)", token, mod.name)
	}
	slices.Sort(labels)
	return 0, fmt.Errorf("token %q not found in module %q (tokens present: %s)", token, mod.name, strings.Join(labels, ", "))
}

// checkLogin logs in to the token on a session of its own and closes it.
//
// Caveat: PKCS#11 logs in a process, not a session. While another context
// of this process is logged in to the token, C_Login answers
// CKR_USER_ALREADY_LOGGED_IN without checking the PIN, so a wrong PIN goes
// unnoticed until the process restarts.
func (mod *module) checkLogin(slot uint, token, pin string) error {
	s, err := mod.raw.OpenSession(slot, p11.CKF_SERIAL_SESSION)
	if err != nil {
		return fmt.Errorf("could not open a session on token %q: %s", token, ckrText(err))
	}
	defer mod.raw.CloseSession(s)
	err = mod.raw.Login(s, p11.CKU_USER, pin)
	e, _ := ckr(err)
	switch {
	case err == nil, e == p11.CKR_USER_ALREADY_LOGGED_IN:
		return nil
	case e == p11.CKR_PIN_INCORRECT:
		return fmt.Errorf("login to token %q failed: the PIN is incorrect (CKR_PIN_INCORRECT)", token)
	case e == p11.CKR_PIN_LOCKED:
		return fmt.Errorf("login to token %q failed: the PIN is locked after too many wrong attempts (CKR_PIN_LOCKED)", token)
	case e == p11.CKR_PIN_EXPIRED:
		return fmt.Errorf("login to token %q failed: the PIN has expired (CKR_PIN_EXPIRED)", token)
	case e == p11.CKR_PIN_LEN_RANGE:
		return fmt.Errorf("login to token %q failed: the token does not accept a PIN of that length (CKR_PIN_LEN_RANGE)", token)
	case e == p11.CKR_USER_PIN_NOT_INITIALIZED:
		return fmt.Errorf("login to token %q failed: the token has no user PIN yet (CKR_USER_PIN_NOT_INITIALIZED)", token)
	}
	return fmt.Errorf("login to token %q failed: %s", token, ckrText(err))
}

// lostError says that the token or the session is gone, found by a probe
// rather than by the error of the failed call itself.
type lostError struct{ why string }

func (e *lostError) Error() string { return e.why }

// probe checks that the token is still there and the admin session still
// logged in. It returns nil or a *lostError.
func (c *conn) probe() error {
	info, err := c.mod.raw.GetTokenInfo(c.slot)
	if err != nil {
		return &lostError{"C_GetTokenInfo: " + ckrText(err)}
	}
	if info.Flags&p11.CKF_TOKEN_INITIALIZED == 0 || info.Label != c.token {
		return &lostError{fmt.Sprintf("slot %d holds another token", c.slot)}
	}
	return c.admin(func(raw *p11.Ctx, s p11.SessionHandle) error {
		si, err := raw.GetSessionInfo(s)
		if err != nil {
			return &lostError{"C_GetSessionInfo: " + ckrText(err)}
		}
		if si.State != p11.CKS_RW_USER_FUNCTIONS {
			return &lostError{"the session is no longer logged in"}
		}
		return nil
	})
}

// admin runs f on the admin session.
func (c *conn) admin(f func(raw *p11.Ctx, s p11.SessionHandle) error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed.Load() {
		return errConnClosed
	}
	return f(c.mod.raw, c.session)
}

// find returns the handles of the objects that match tmpl.
func (c *conn) find(tmpl ...*p11.Attribute) ([]p11.ObjectHandle, error) {
	var found []p11.ObjectHandle
	err := c.admin(func(raw *p11.Ctx, s p11.SessionHandle) (err error) {
		if err := raw.FindObjectsInit(s, tmpl); err != nil {
			return fmt.Errorf("C_FindObjectsInit: %w", err)
		}
		defer func() {
			if ferr := raw.FindObjectsFinal(s); ferr != nil && err == nil {
				err = fmt.Errorf("C_FindObjectsFinal: %w", ferr)
			}
		}()
		for {
			hs, _, err := raw.FindObjects(s, 64)
			if err != nil {
				return fmt.Errorf("C_FindObjects: %w", err)
			}
			if len(hs) == 0 {
				return nil
			}
			found = append(found, hs...)
		}
	})
	return found, err
}

// findLabel returns the key objects of a class (CKO_PRIVATE_KEY or
// CKO_PUBLIC_KEY) with the label.
func (c *conn) findLabel(class uint, label string) ([]p11.ObjectHandle, error) {
	return c.find(
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_CLASS, class),
		p11.NewAttribute(p11.CKA_LABEL, label),
	)
}

// privateKey returns the handle of the private key with the label, or an
// error wrapping errMissing if the token is fine and has none.
func (c *conn) privateKey(label string) (p11.ObjectHandle, error) {
	hs, err := c.findLabel(p11.CKO_PRIVATE_KEY, label)
	switch {
	case err != nil:
		return 0, err
	case len(hs) > 1:
		return 0, fmt.Errorf("token %q has %d private keys labelled %q; remove all but one", c.token, len(hs), label)
	case len(hs) == 0:
		// SoftHSM answers "none" when its token has gone away: only a
		// token that is still there can say that the key is missing.
		if err := c.probe(); err != nil {
			return 0, err
		}
		return 0, errMissing
	}
	return hs[0], nil
}

// attrs reads attributes of an object.
func (c *conn) attrs(h p11.ObjectHandle, types ...uint) ([]*p11.Attribute, error) {
	tmpl := make([]*p11.Attribute, len(types))
	for i, t := range types {
		tmpl[i] = p11.NewAttribute(t, nil)
	}
	var got []*p11.Attribute
	err := c.admin(func(raw *p11.Ctx, s p11.SessionHandle) (err error) {
		if got, err = raw.GetAttributeValue(s, h, tmpl); err != nil {
			return fmt.Errorf("C_GetAttributeValue: %w", err)
		}
		return nil
	})
	return got, err
}

// objects returns the key objects whose label starts with prefix, with the
// prefix cut off their labels.
func (c *conn) objects(prefix string) ([]object, error) {
	var objs []object
	for _, class := range []uint{p11.CKO_PRIVATE_KEY, p11.CKO_PUBLIC_KEY} {
		hs, err := c.find(p11.NewAttribute(p11.CKA_TOKEN, true), p11.NewAttribute(p11.CKA_CLASS, class))
		if err != nil {
			return nil, err
		}
		for _, h := range hs {
			a, err := c.attrs(h, p11.CKA_LABEL)
			if isCKR(err, p11.CKR_OBJECT_HANDLE_INVALID) {
				continue // destroyed since the search
			}
			if err != nil {
				return nil, err
			}
			if label, ok := strings.CutPrefix(string(a[0].Value), prefix); ok && label != "" {
				objs = append(objs, object{handle: uint(h), private: class == p11.CKO_PRIVATE_KEY, label: label})
			}
		}
	}
	return objs, nil
}

// destroy destroys objects.
func (c *conn) destroy(hs ...p11.ObjectHandle) error {
	return c.admin(func(raw *p11.Ctx, s p11.SessionHandle) error {
		for _, h := range hs {
			if err := raw.DestroyObject(s, h); err != nil {
				return fmt.Errorf("C_DestroyObject: %w", err)
			}
		}
		return nil
	})
}

// relabel sets an object's CKA_LABEL and CKA_ID, in one call.
func (c *conn) relabel(h p11.ObjectHandle, label string) error {
	return c.admin(func(raw *p11.Ctx, s p11.SessionHandle) error {
		err := raw.SetAttributeValue(s, h, []*p11.Attribute{
			p11.NewAttribute(p11.CKA_LABEL, label),
			p11.NewAttribute(p11.CKA_ID, []byte(label)),
		})
		if err != nil {
			return fmt.Errorf("C_SetAttributeValue: %w", err)
		}
		return nil
	})
}

// generate generates a key pair of type t on the token, labelled label
// (CKA_LABEL and CKA_ID of both halves). The private key is sensitive, not
// extractable, and can sign only.
func (c *conn) generate(label string, t hsm.KeyType) (crypto11.Signer, error) {
	attr := p11.NewAttribute
	pub := crypto11.AttributeSet{
		crypto11.CkaLabel:   attr(p11.CKA_LABEL, label),
		crypto11.CkaId:      attr(p11.CKA_ID, []byte(label)),
		crypto11.CkaToken:   attr(p11.CKA_TOKEN, true),
		crypto11.CkaPrivate: attr(p11.CKA_PRIVATE, false),
		crypto11.CkaVerify:  attr(p11.CKA_VERIFY, true),
	}
	priv := crypto11.AttributeSet{
		crypto11.CkaLabel:       attr(p11.CKA_LABEL, label),
		crypto11.CkaId:          attr(p11.CKA_ID, []byte(label)),
		crypto11.CkaToken:       attr(p11.CKA_TOKEN, true),
		crypto11.CkaPrivate:     attr(p11.CKA_PRIVATE, true),
		crypto11.CkaSensitive:   attr(p11.CKA_SENSITIVE, true),
		crypto11.CkaExtractable: attr(p11.CKA_EXTRACTABLE, false),
		crypto11.CkaSign:        attr(p11.CKA_SIGN, true),
		crypto11.CkaModifiable:  attr(p11.CKA_MODIFIABLE, true), // for the relabelling
	}
	var (
		s   crypto11.Signer
		err error
	)
	switch t {
	case hsm.ECP256, hsm.ECP384:
		curve := elliptic.P256()
		if t == hsm.ECP384 {
			curve = elliptic.P384()
		}
		priv[crypto11.CkaDerive] = attr(p11.CKA_DERIVE, false)
		s, err = c.c11.GenerateECDSAKeyPairWithAttributes(pub, priv, curve)
	case hsm.RSA2048, hsm.RSA4096:
		bits := 2048
		if t == hsm.RSA4096 {
			bits = 4096
		}
		pub[crypto11.CkaEncrypt] = attr(p11.CKA_ENCRYPT, false)
		pub[crypto11.CkaWrap] = attr(p11.CKA_WRAP, false)
		priv[crypto11.CkaDecrypt] = attr(p11.CKA_DECRYPT, false)
		priv[crypto11.CkaUnwrap] = attr(p11.CKA_UNWRAP, false)
		s, err = c.c11.GenerateRSAKeyPairWithAttributes(pub, priv, bits)
	default:
		_, err = hsm.ParseKeyType(string(t))
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("C_GenerateKeyPair: %w", err)
	}
	return s, nil
}

// verdict is what a failed call says about the connection it used.
type verdict int

const (
	own   verdict = iota // the call's own failure: the connection is fine
	stale                // a reset closed the connection: reopen it
	lost                 // the token or the session is gone: reopen, with backoff
)

// judge classifies err, the failure of a call on c, and for lost says why.
func judge(c *conn, err error) (verdict, string) {
	if c.closed.Load() {
		return stale, ""
	}
	if le := (*lostError)(nil); errors.As(err, &le) {
		return lost, le.why
	}
	e, ok := ckr(err)
	if !ok {
		return own, ""
	}
	switch e {
	case p11.CKR_SESSION_HANDLE_INVALID, p11.CKR_SESSION_CLOSED, p11.CKR_USER_NOT_LOGGED_IN,
		p11.CKR_DEVICE_REMOVED, p11.CKR_DEVICE_ERROR, p11.CKR_TOKEN_NOT_PRESENT, p11.CKR_TOKEN_NOT_RECOGNIZED,
		p11.CKR_CRYPTOKI_NOT_INITIALIZED, p11.CKR_SLOT_ID_INVALID:
		return lost, ckrText(e)
	case p11.CKR_OBJECT_HANDLE_INVALID, p11.CKR_KEY_HANDLE_INVALID, p11.CKR_GENERAL_ERROR, p11.CKR_FUNCTION_FAILED:
		// A key deleted behind our back, or a token gone: SoftHSM says
		// CKR_OBJECT_HANDLE_INVALID for both. Ask the token.
		if perr := c.probe(); perr != nil {
			return lost, ckrText(e) + ", and " + perr.Error()
		}
	}
	return own, ""
}

// ckr finds the PKCS#11 return value in err's chain. crypto11 wraps errors
// with github.com/pkg/errors v0.8, whose wrappers have Cause, not Unwrap.
func ckr(err error) (p11.Error, bool) {
	for err != nil {
		if e, ok := err.(p11.Error); ok {
			return e, true
		}
		if c, ok := err.(interface{ Cause() error }); ok {
			if next := c.Cause(); next != err {
				err = next
				continue
			}
		}
		err = errors.Unwrap(err)
	}
	return 0, false
}

func isCKR(err error, rv uint) bool {
	e, ok := ckr(err)
	return ok && e == p11.Error(rv)
}

// ckrText names err's PKCS#11 return value (CKR_PIN_INCORRECT), or returns
// err's text if it has none.
func ckrText(err error) string {
	e, ok := ckr(err)
	if !ok {
		return err.Error()
	}
	// p11.Error's text is "pkcs11: 0xA0: CKR_PIN_INCORRECT".
	if i := strings.LastIndex(e.Error(), ": "); i >= 0 && strings.HasPrefix(e.Error()[i+2:], "CKR_") {
		return e.Error()[i+2:]
	}
	return fmt.Sprintf("CKR 0x%X", uint(e))
}

// destroyLabel destroys the key objects of a class with the label.
func (c *conn) destroyLabel(class uint, label string) error {
	hs, err := c.findLabel(class, label)
	if err != nil {
		return err
	}
	if len(hs) == 0 {
		return c.probe() // SoftHSM finds nothing on a token that went away
	}
	return c.destroy(hs...)
}

// relabelLabel relabels the key objects of a class labelled from to to.
func (c *conn) relabelLabel(class uint, from, to string) error {
	hs, err := c.findLabel(class, from)
	if err != nil {
		return err
	}
	if len(hs) == 0 {
		return c.probe() // SoftHSM finds nothing on a token that went away
	}
	for _, h := range hs {
		if err := c.relabel(h, to); err != nil {
			return err
		}
	}
	return nil
}
