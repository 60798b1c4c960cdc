//go:build cgo

package pkcs11_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	p11 "github.com/miekg/pkcs11"

	"github.com/plinth-id/plinth/hsm"
	"github.com/plinth-id/plinth/hsm/hsmtest"
	"github.com/plinth-id/plinth/hsm/pkcs11"
	"github.com/plinth-id/plinth/simulator"
)

// SoftHSM reads its configuration once per process (see
// simulator.SoftHSM), so every test in this binary shares the tokens that
// TestMain creates, and keeps to its own KeyIDPrefix on them.
var (
	softhsm  *simulator.SoftHSM // "plinth-test": most tests
	pinToken *simulator.SoftHSM // "plinth-pin": login tests, which need a token no Manager is logged in to
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "plinth-pkcs11-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if softhsm, err = simulator.StartSoftHSM(dir, "plinth-test", "test-pin-4c1d"); err == nil {
		pinToken, err = simulator.StartSoftHSM(dir, "plinth-pin", "pin-token-77aa")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// Before the first PKCS#11 call of the process.
	os.Setenv("SOFTHSM2_CONF", softhsm.Config)
	// What Example reads, as a server reads its PIN from the environment.
	os.Setenv("PLINTH_PKCS11_MODULE", softhsm.Module)
	os.Setenv("PLINTH_PKCS11_TOKEN", softhsm.TokenLabel)
	os.Setenv("PLINTH_PKCS11_PIN", softhsm.PIN)
	return m.Run()
}

func config(prefix string) pkcs11.Config {
	return pkcs11.Config{Module: softhsm.Module, TokenLabel: softhsm.TokenLabel, PIN: softhsm.PIN, KeyIDPrefix: prefix}
}

func open(t testing.TB, c pkcs11.Config) *pkcs11.Manager {
	t.Helper()
	m, err := pkcs11.New(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// fresh opens a Manager on the namespace and empties it, so that a test
// run again in the same process (-count) starts from nothing.
func fresh(t testing.TB, c pkcs11.Config) *pkcs11.Manager {
	t.Helper()
	m := open(t, c)
	keys, err := m.ListKeys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if err := m.DeleteKey(t.Context(), k.ID()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.Sweep(t.Context()); err != nil {
		t.Fatal(err)
	}
	return m
}

// namespaces are the contract checks' namespaces, unique in the process.
var namespaces = struct {
	sync.Mutex
	n int
	m map[*testing.T]string
}{m: make(map[*testing.T]string)}

func TestSoftHSMContract(t *testing.T) {
	// Each check gets a namespace of its own on the shared token; reopen
	// is a second Manager over the same namespace.
	namespace := func(t *testing.T) string {
		namespaces.Lock()
		defer namespaces.Unlock()
		if namespaces.m[t] == "" {
			namespaces.n++
			namespaces.m[t] = fmt.Sprintf("contract/%s/%d/", t.Name(), namespaces.n)
		}
		return namespaces.m[t]
	}
	open := func(t *testing.T) hsm.KeyManager { return open(t, config(namespace(t))) }
	hsmtest.Run(t, open, open)
}

func TestSoftHSMNewErrors(t *testing.T) {
	notLib := t.TempDir() + "/libnot.so"
	if err := os.WriteFile(notLib, []byte("not a library"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	const wrongPIN = "wrong-pin-9f3e"
	base := pkcs11.Config{Module: pinToken.Module, TokenLabel: pinToken.TokenLabel, PIN: pinToken.PIN}
	with := func(f func(c *pkcs11.Config)) pkcs11.Config {
		c := base
		f(&c)
		return c
	}
	tests := []struct {
		name string
		c    pkcs11.Config
		want string
	}{
		{"no module", with(func(c *pkcs11.Config) { c.Module = "" }), "pkcs11: module path is empty"},
		{"missing module", with(func(c *pkcs11.Config) { c.Module = "/nonexistent/libnope.so" }), `pkcs11: module "/nonexistent/libnope.so" does not exist`},
		{"module is a directory", with(func(c *pkcs11.Config) { c.Module = dir }), `pkcs11: module "` + dir + `" is a directory, not a PKCS#11 library`},
		{"not a library", with(func(c *pkcs11.Config) { c.Module = notLib }), `pkcs11: could not load module "` + notLib + `": it is not a PKCS#11 library, or a library it needs is missing`},
		{"no token label", with(func(c *pkcs11.Config) { c.TokenLabel = "" }), "pkcs11: token label is empty"},
		{"long token label", with(func(c *pkcs11.Config) { c.TokenLabel = strings.Repeat("t", 33) }), `pkcs11: token label "` + strings.Repeat("t", 33) + `" is longer than 32 bytes, the most PKCS#11 allows`},
		{"unknown token", with(func(c *pkcs11.Config) { c.TokenLabel = "plinth-nope" }), `pkcs11: token "plinth-nope" not found in module "/usr/lib/softhsm/libsofthsm2.so" (tokens present: "plinth-pin", "plinth-test")`},
		{"no PIN", with(func(c *pkcs11.Config) { c.PIN = "" }), "pkcs11: PIN is empty"},
		{"wrong PIN", with(func(c *pkcs11.Config) { c.PIN = wrongPIN }), `pkcs11: login to token "plinth-pin" failed: the PIN is incorrect (CKR_PIN_INCORRECT)`},
		{"negative backoff", with(func(c *pkcs11.Config) { c.ReopenBackoff = -time.Second }), "pkcs11: reopen backoff is negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := pkcs11.New(tt.c)
			if err == nil {
				m.Close()
				t.Fatalf("New: no error, want %s", tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("New: got error\n%s\nwant\n%s", err, tt.want)
			}
			for _, pin := range []string{pinToken.PIN, wrongPIN} {
				if strings.Contains(err.Error(), pin) {
					t.Errorf("error %q contains a PIN", err)
				}
			}
		})
	}
	// The right PIN works after the wrong one.
	m, err := pkcs11.New(base)
	if err != nil {
		t.Fatalf("New with the right PIN after a wrong one: %v", err)
	}
	m.Close()
}

func TestSoftHSMConfigHidesPIN(t *testing.T) {
	c := config("plinth/example.org/")
	var logged strings.Builder
	slogger(&logged).Info("key manager", "config", c)
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), c.String(), logged.String()} {
		if strings.Contains(s, c.PIN) {
			t.Errorf("%q shows the PIN", s)
		}
		if !strings.Contains(s, "redacted") {
			t.Errorf("%q does not say the PIN is redacted", s)
		}
	}
}

func TestSoftHSMProvenance(t *testing.T) {
	ctx := t.Context()
	m := fresh(t, config("prov/"))
	if _, err := m.GenerateKey(ctx, "x509-ca-A", hsm.RSA2048); err != nil {
		t.Fatal(err)
	}
	p, err := m.Provenance(ctx, "x509-ca-A")
	if err != nil {
		t.Fatal(err)
	}
	want := hsm.Provenance{
		Backend:         "pkcs11",
		Location:        "pkcs11:token=plinth-test;object=prov%2Fx509-ca-A",
		GeneratedInside: true,
		NonExtractable:  true,
		Attributes: map[string]string{
			"CKA_LOCAL": "true", "CKA_NEVER_EXTRACTABLE": "true", "CKA_SENSITIVE": "true",
			"CKA_EXTRACTABLE": "false", "CKA_ALWAYS_SENSITIVE": "true",
			"TokenManufacturer": "SoftHSM project", "TokenModel": "SoftHSM v2",
		},
	}
	checkProvenance(t, p, want)

	// A key imported in the clear is neither generated inside nor
	// non-extractable, and the manager says so.
	priv := importECKey(t, "prov/imported", true)
	k, err := m.GetKey(ctx, "imported")
	if err != nil {
		t.Fatal(err)
	}
	if !priv.PublicKey.Equal(k.Public()) || k.Type() != hsm.ECP256 {
		t.Errorf("GetKey(imported) = %s key %v, want the imported P-256 key", k.Type(), k.Public())
	}
	signVerify(t, k)
	p, err = m.Provenance(ctx, "imported")
	if err != nil {
		t.Fatal(err)
	}
	want.Location = "pkcs11:token=plinth-test;object=prov%2Fimported"
	want.GeneratedInside, want.NonExtractable = false, false
	want.Attributes = map[string]string{
		"CKA_LOCAL": "false", "CKA_NEVER_EXTRACTABLE": "false", "CKA_SENSITIVE": "false",
		"CKA_EXTRACTABLE": "true", "CKA_ALWAYS_SENSITIVE": "false",
		"TokenManufacturer": "SoftHSM project", "TokenModel": "SoftHSM v2",
	}
	checkProvenance(t, p, want)

	const notFound = `pkcs11: key "missing" not found on token "plinth-test": hsm: key not found`
	if _, err := m.Provenance(ctx, "missing"); err == nil || err.Error() != notFound || !errors.Is(err, hsm.ErrNotFound) {
		t.Errorf("Provenance(missing): got error %v, want %s", err, notFound)
	}
}

func checkProvenance(t *testing.T, got *hsm.Provenance, want hsm.Provenance) {
	t.Helper()
	if got.Attributes["TokenSerial"] == "" {
		t.Errorf("Provenance has no TokenSerial: %v", got.Attributes)
	}
	delete(got.Attributes, "TokenSerial")
	if fmt.Sprint(*got) != fmt.Sprint(want) {
		t.Errorf("Provenance:\n got %+v\nwant %+v", *got, want)
	}
}

func TestSoftHSMNamespaces(t *testing.T) {
	ctx := t.Context()
	a := fresh(t, config("ns/a/"))
	b := fresh(t, config("ns/b/"))
	ka, err := a.GenerateKey(ctx, "x509-ca-A", hsm.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := b.GenerateKey(ctx, "x509-ca-A", hsm.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	if samePublic(ka.Public(), kb.Public()) {
		t.Fatal("two namespaces share a key")
	}
	for name, m := range map[string]*pkcs11.Manager{"a": a, "b": b} {
		keys, err := m.ListKeys(ctx)
		if err != nil || len(keys) != 1 || keys[0].ID() != "x509-ca-A" {
			t.Errorf("%s: ListKeys = %v, %v; want only x509-ca-A", name, keys, err)
		}
	}
	// Deleting in one namespace leaves the other alone.
	if err := a.DeleteKey(ctx, "x509-ca-A"); err != nil {
		t.Fatal(err)
	}
	if k, err := b.GetKey(ctx, "x509-ca-A"); err != nil || !samePublic(k.Public(), kb.Public()) {
		t.Errorf("b lost its key when a deleted its own: %v", err)
	}
}

func TestSoftHSMBadInput(t *testing.T) {
	ctx := t.Context()
	m := fresh(t, config("input/"))
	k, err := m.GenerateKey(ctx, "rsa", hsm.RSA2048)
	if err != nil {
		t.Fatal(err)
	}
	ec, err := m.GenerateKey(ctx, "ec", hsm.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("x"))
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"reserved id", func() error { _, err := m.GenerateKey(ctx, "x.pending-0123456789abcdef", hsm.ECP256); return err }(),
			`pkcs11: key id "x.pending-0123456789abcdef" ends like the label of a key being generated (.pending- and 16 hex digits), which is reserved`},
		{"empty id", func() error { _, err := m.GenerateKey(ctx, "", hsm.ECP256); return err }(), "pkcs11: key id is empty"},
		{"unknown type", func() error { _, err := m.GenerateKey(ctx, "x", "ec-p521"); return err }(),
			`pkcs11: could not generate key "x": hsm: unknown key type "ec-p521" (want ec-p256, ec-p384, rsa-2048 or rsa-4096)`},
		{"delete missing", m.DeleteKey(ctx, "missing"), `pkcs11: key "missing" not found on token "plinth-test": hsm: key not found`},
		{"short digest", func() error { _, err := k.Sign(nil, d[:31], crypto.SHA256); return err }(),
			`pkcs11: cannot sign with key "rsa": digest has 31 bytes, but a SHA-256 digest has 32`},
		{"unsupported hash", func() error { h := sha256.Sum256(nil); _, err := k.Sign(nil, h[:], crypto.SHA3_256); return err }(),
			`pkcs11: cannot sign with key "rsa": RSA signatures with hash SHA3-256 are not supported`},
		{"RSA without options", func() error { _, err := k.Sign(nil, d[:], nil); return err }(),
			`pkcs11: cannot sign with key "rsa": RSA signing needs options (a hash or *rsa.PSSOptions), got nil`},
	}
	for _, tt := range tests {
		if tt.err == nil || tt.err.Error() != tt.want {
			t.Errorf("%s: got error %v, want %s", tt.name, tt.err, tt.want)
		}
	}
	// ECDSA signs with nil options, as crypto/ecdsa does.
	sig, err := ec.Sign(nil, d[:], nil)
	if err != nil || !ecdsa.VerifyASN1(ec.Public().(*ecdsa.PublicKey), d[:], sig) {
		t.Errorf("ECDSA Sign with nil options: %v", err)
	}
}

func TestSoftHSMClose(t *testing.T) {
	ctx := t.Context()
	fresh(t, config("close/")).Close()
	m, err := pkcs11.New(config("close/"))
	if err != nil {
		t.Fatal(err)
	}
	k, err := m.GenerateKey(ctx, "x509-ca-A", hsm.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	d := sha256.Sum256([]byte("x"))
	if _, err := k.Sign(nil, d[:], crypto.SHA256); err == nil || err.Error() != `pkcs11: cannot sign with key "x509-ca-A": the manager is closed` {
		t.Errorf("Sign after Close: got error %v", err)
	}
	if _, err := m.GetKey(ctx, "x509-ca-A"); err == nil || err.Error() != `pkcs11: could not get key "x509-ca-A": the manager is closed` {
		t.Errorf("GetKey after Close: got error %v", err)
	}
	// The key is still on the token.
	if _, err := open(t, config("close/")).GetKey(ctx, "x509-ca-A"); err != nil {
		t.Errorf("GetKey from a new Manager: %v", err)
	}
}

// raw is this test's own PKCS#11 session on a token, to act behind a
// Manager's back. It must be used while a Manager keeps the module
// initialized, and never initializes or finalizes it itself.
type raw struct {
	*p11.Ctx
	s    p11.SessionHandle
	slot uint
}

func rawSession(t *testing.T, token string) *raw {
	t.Helper()
	c := p11.New(softhsm.Module)
	if c == nil {
		t.Fatal("cannot load the module")
	}
	t.Cleanup(c.Destroy)
	slots, err := c.GetSlotList(true)
	if err != nil {
		t.Fatal(err)
	}
	for _, slot := range slots {
		if info, err := c.GetTokenInfo(slot); err == nil && info.Label == token {
			s, err := c.OpenSession(slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.CloseSession(s) })
			return &raw{Ctx: c, s: s, slot: slot}
		}
	}
	t.Fatalf("no token %q", token)
	return nil
}

// objects returns the handles of the key objects with the label.
func (r *raw) objects(t *testing.T, label string) []p11.ObjectHandle {
	t.Helper()
	if err := r.FindObjectsInit(r.s, []*p11.Attribute{p11.NewAttribute(p11.CKA_LABEL, label)}); err != nil {
		t.Fatal(err)
	}
	defer r.FindObjectsFinal(r.s)
	hs, _, err := r.FindObjects(r.s, 100)
	if err != nil {
		t.Fatal(err)
	}
	return hs
}

// labels returns the labels of all objects whose label starts with prefix.
func (r *raw) labels(t *testing.T, prefix string) []string {
	t.Helper()
	if err := r.FindObjectsInit(r.s, nil); err != nil {
		t.Fatal(err)
	}
	hs, _, err := r.FindObjects(r.s, 10000)
	r.FindObjectsFinal(r.s)
	if err != nil {
		t.Fatal(err)
	}
	var labels []string
	for _, h := range hs {
		a, err := r.GetAttributeValue(r.s, h, []*p11.Attribute{p11.NewAttribute(p11.CKA_LABEL, nil), p11.NewAttribute(p11.CKA_ID, nil)})
		if err != nil {
			t.Fatal(err)
		}
		if l := string(a[0].Value); strings.HasPrefix(l, prefix) {
			if string(a[1].Value) != l {
				t.Errorf("object %q has CKA_ID %q", l, a[1].Value)
			}
			labels = append(labels, l)
		}
	}
	return labels
}

func TestSoftHSMKeyDeletedBehindBack(t *testing.T) {
	ctx := t.Context()
	m := fresh(t, config("behind/"))
	doomed, err := m.GenerateKey(ctx, "doomed", hsm.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	kept, err := m.GenerateKey(ctx, "kept", hsm.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	signVerify(t, doomed)

	r := rawSession(t, softhsm.TokenLabel)
	hs := r.objects(t, "behind/doomed")
	if len(hs) != 2 {
		t.Fatalf("the token has %d objects labelled behind/doomed, want 2", len(hs))
	}
	for _, h := range hs {
		if err := r.DestroyObject(r.s, h); err != nil {
			t.Fatal(err)
		}
	}

	const notFound = `pkcs11: key "doomed" not found on token "plinth-test": hsm: key not found`
	if _, err := m.GetKey(ctx, "doomed"); err == nil || err.Error() != notFound {
		t.Errorf("GetKey of a key deleted behind the manager's back: got error %v, want %s", err, notFound)
	}
	d := sha256.Sum256([]byte("x"))
	const cannotSign = `pkcs11: cannot sign with key "doomed": it is no longer on token "plinth-test": hsm: key not found`
	_, err = doomed.Sign(nil, d[:], crypto.SHA256)
	if err == nil || err.Error() != cannotSign || !errors.Is(err, hsm.ErrNotFound) || errors.Is(err, pkcs11.ErrUnavailable) {
		t.Errorf("Sign with a key deleted behind the manager's back: got error %v, want %s", err, cannotSign)
	}
	if keys, err := m.ListKeys(ctx); err != nil || len(keys) != 1 || keys[0].ID() != "kept" {
		t.Errorf("ListKeys = %v, %v; want only kept", keys, err)
	}
	signVerify(t, kept)

	// Replaced behind its back (by another Manager, as by another
	// process): the old key refuses to sign rather than sign with a key
	// its Public does not match.
	newer, err := open(t, config("behind/")).GenerateKey(ctx, "kept", hsm.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	const replaced = `pkcs11: cannot sign with key "kept": token "plinth-test" holds another key under its ID now (get that one with GetKey): hsm: key not found`
	if _, err := kept.Sign(nil, d[:], crypto.SHA256); err == nil || err.Error() != replaced {
		t.Errorf("Sign with a key replaced behind the manager's back: got error %v, want %s", err, replaced)
	}
	k, err := m.GetKey(ctx, "kept")
	if err != nil || !samePublic(k.Public(), newer.Public()) {
		t.Fatalf("GetKey after a replacement behind the manager's back: %v", err)
	}
	signVerify(t, k)
	if n := pkcs11.ReopenAttempts(m); n != 0 {
		t.Errorf("the manager reopened the token %d times for keys that were gone", n)
	}
}

func TestSoftHSMSessionsClosedBehindBack(t *testing.T) {
	ctx := t.Context()
	m := fresh(t, config("sessions/"))
	ec, err := m.GenerateKey(ctx, "ec", hsm.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := m.GenerateKey(ctx, "rsa", hsm.RSA2048)
	if err != nil {
		t.Fatal(err)
	}
	r := rawSession(t, softhsm.TokenLabel)

	// C_CloseAllSessions closes every session of the process on the token
	// (the manager's and this test's) and so logs the process out: what an
	// HSM restart or a network HSM's failover does to a client.
	if err := r.CloseAllSessions(r.slot); err != nil {
		t.Fatal(err)
	}
	signVerify(t, ec) // reopens and signs again, without an error
	signVerify(t, rsaKey)
	if n := pkcs11.Reopens(m); n != 1 {
		t.Errorf("the manager reopened the token %d times, want 1", n)
	}
	if keys, err := m.ListKeys(ctx); err != nil || len(keys) != 2 {
		t.Errorf("ListKeys after the sessions were closed: %v, %v", keys, err)
	}

	// C_Finalize behind its back: the module forgets everything.
	if err := r.Finalize(); err != nil {
		t.Fatal(err)
	}
	signVerify(t, ec)
	if n := pkcs11.Reopens(m); n != 2 {
		t.Errorf("the manager reopened the token %d times, want 2", n)
	}
	if _, err := m.GetKey(ctx, "rsa"); err != nil {
		t.Errorf("GetKey after C_Finalize: %v", err)
	}
}

// TestSoftHSMResetSparesOtherTokens: when one manager reopens the module
// (closing every context on it), a manager on another token of the module
// reopens at its next call and signs without an error.
func TestSoftHSMResetSparesOtherTokens(t *testing.T) {
	ctx := t.Context()
	a := fresh(t, config("reset/"))
	b := fresh(t, pkcs11.Config{Module: pinToken.Module, TokenLabel: pinToken.TokenLabel, PIN: pinToken.PIN, KeyIDPrefix: "reset/"})
	ka, err := a.GenerateKey(ctx, "x509-ca-A", hsm.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := b.GenerateKey(ctx, "x509-ca-A", hsm.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	r := rawSession(t, softhsm.TokenLabel)
	if err := r.CloseAllSessions(r.slot); err != nil { // a's token only
		t.Fatal(err)
	}
	signVerify(t, ka)
	signVerify(t, kb)
	if na, nb := pkcs11.Reopens(a), pkcs11.Reopens(b); na != 1 || nb != 1 {
		t.Errorf("reopens: a %d, b %d; want 1 each", na, nb)
	}
}

// TestSoftHSMTokenDisappears takes SoftHSM's token directory away while a
// Manager uses it, as an HSM that goes off the network. SoftHSM notices at
// once (its objects become invalid: CKR_OBJECT_HANDLE_INVALID), and only a
// new C_Initialize makes it see the token again when it is back, which the
// manager's reopen does.
func TestSoftHSMTokenDisappears(t *testing.T) {
	ctx := t.Context()
	clock := &fakeClock{now: time.Unix(1_800_000_000, 0)}
	c := config("gone/")
	c.Clock = clock.Now
	var logged syncBuffer
	c.Log = slogger(&logged)
	m := fresh(t, c)
	k, err := m.GenerateKey(ctx, "x509-ca-A", hsm.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	signVerify(t, k)

	away := softhsm.TokenDir + ".away"
	if err := os.Rename(softhsm.TokenDir, away); err != nil {
		t.Fatal(err)
	}
	back := func() {
		if err := os.Rename(away, softhsm.TokenDir); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		if _, err := os.Stat(away); err == nil {
			back()
		}
	})

	d := sha256.Sum256([]byte("x"))
	_, err = k.Sign(nil, d[:], crypto.SHA256)
	const first = `pkcs11: cannot sign with key "x509-ca-A": token "plinth-test" is unavailable: ` +
		`CKR_OBJECT_HANDLE_INVALID, and C_GetTokenInfo: CKR_GENERAL_ERROR; ` +
		`reopening it failed: could not initialize module "/usr/lib/softhsm/libsofthsm2.so": CKR_GENERAL_ERROR`
	if err == nil || err.Error() != first || !errors.Is(err, pkcs11.ErrUnavailable) {
		t.Fatalf("Sign with the token gone: got error\n%v\nwant\n%s", err, first)
	}
	if n := pkcs11.ReopenAttempts(m); n != 1 {
		t.Errorf("%d reopen attempts, want 1", n)
	}

	// While the backoff runs, every call fails fast, with ErrUnavailable
	// and never ErrNotFound (which would make the server generate a new
	// CA key), from any number of goroutines.
	unavailable := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, pkcs11.ErrUnavailable) || errors.Is(err, hsm.ErrNotFound) {
			t.Errorf("%s with the token gone: got error %v, want one wrapping ErrUnavailable", what, err)
		}
	}
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			_, err := k.Sign(nil, d[:], crypto.SHA256)
			unavailable("Sign", err)
		})
	}
	wg.Wait()
	_, err = m.GetKey(ctx, "x509-ca-A")
	unavailable("GetKey", err)
	_, err = m.GetKey(ctx, "missing")
	unavailable("GetKey(missing)", err)
	_, err = m.ListKeys(ctx)
	unavailable("ListKeys", err)
	_, err = m.GenerateKey(ctx, "x509-ca-B", hsm.ECP256)
	unavailable("GenerateKey", err)
	unavailable("DeleteKey", m.DeleteKey(ctx, "x509-ca-A"))
	_, err = m.Provenance(ctx, "x509-ca-A")
	unavailable("Provenance", err)
	if n := pkcs11.ReopenAttempts(m); n != 1 {
		t.Errorf("%d reopen attempts during the backoff, want still 1", n)
	}

	// After the backoff, one more attempt; the next wait is twice as long.
	clock.Advance(time.Second)
	_, err = k.Sign(nil, d[:], crypto.SHA256)
	unavailable("Sign after the backoff", err)
	if n := pkcs11.ReopenAttempts(m); n != 2 {
		t.Errorf("%d reopen attempts, want 2", n)
	}
	clock.Advance(time.Second)
	_, err = k.Sign(nil, d[:], crypto.SHA256)
	unavailable("Sign 1s into a 2s backoff", err)

	// The token comes back: after the backoff, the same Manager and the
	// same Key sign again.
	back()
	_, err = k.Sign(nil, d[:], crypto.SHA256)
	unavailable("Sign before the backoff ends", err)
	clock.Advance(time.Second)
	signVerify(t, k)
	if n := pkcs11.ReopenAttempts(m); n != 3 {
		t.Errorf("%d reopen attempts, want 3", n)
	}
	again, err := m.GetKey(ctx, "x509-ca-A")
	if err != nil || again != k {
		t.Errorf("GetKey after the token came back: %v (same key: %t)", err, again == k)
	}
	if _, err := m.GenerateKey(ctx, "x509-ca-B", hsm.ECP256); err != nil {
		t.Errorf("GenerateKey after the token came back: %v", err)
	}
	if keys, err := m.ListKeys(ctx); err != nil || len(keys) != 2 {
		t.Errorf("ListKeys after the token came back: %v, %v", keys, err)
	}

	// The outage is logged at each failed attempt, then the recovery; the
	// PIN never.
	log := logged.String()
	if n := strings.Count(log, `msg="PKCS#11 token unavailable; signing fails until it is back"`); n != 2 {
		t.Errorf("logged the outage %d times, want 2 (one per failed attempt):\n%s", n, log)
	}
	if !strings.Contains(log, `msg="PKCS#11 token reopened" token=plinth-test attempt=3`) {
		t.Errorf("did not log the recovery:\n%s", log)
	}
	if strings.Contains(log, softhsm.PIN) {
		t.Errorf("the log shows the PIN:\n%s", log)
	}
}

// syncBuffer is a bytes.Buffer that goroutines may write at once.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestSoftHSMCrashDuringReplace interrupts GenerateKey after each step, as
// a crash would, and checks that a restarted manager (New), or the same
// one's Sweep, finds the ID with the old key before the commit point and the
// new key after it, and that nothing else is left on the token.
func TestSoftHSMCrashDuringReplace(t *testing.T) {
	ctx := t.Context()
	tests := []struct {
		step    string
		want    hsm.KeyType // the old key is P-256, the new one P-384
		removed int         // by Sweep
	}{
		{"generated", hsm.ECP256, 1},
		{"deleted-old-private", hsm.ECP384, 1},
		{"deleted-old-public", hsm.ECP384, 0},
		{"relabelled-public", hsm.ECP384, 0},
		{"relabelled-private", hsm.ECP384, 0},
	}
	crash := errors.New("crash")
	for _, tt := range tests {
		for _, after := range []string{"restart", "sweep"} {
			t.Run(tt.step+"/"+after, func(t *testing.T) {
				prefix := "crash/" + tt.step + "/" + after + "/"
				m := fresh(t, config(prefix))
				r := rawSession(t, softhsm.TokenLabel)
				old, err := m.GenerateKey(ctx, "x509-ca-A", hsm.ECP256)
				if err != nil {
					t.Fatal(err)
				}
				pkcs11.SetCrash(m, func(step string) error {
					if step == tt.step {
						return crash
					}
					return nil
				})
				if _, err := m.GenerateKey(ctx, "x509-ca-A", hsm.ECP384); !errors.Is(err, crash) {
					t.Fatalf("GenerateKey: got error %v, want the crash", err)
				}
				pkcs11.SetCrash(m, nil)

				view := m
				switch after {
				case "restart":
					view = open(t, config(prefix))
				case "sweep":
					n, err := m.Sweep(ctx)
					if err != nil || n != tt.removed {
						t.Errorf("Sweep = %d, %v; want %d", n, err, tt.removed)
					}
				}
				k, err := view.GetKey(ctx, "x509-ca-A")
				if err != nil {
					t.Fatalf("GetKey after the crash: %v", err)
				}
				if k.Type() != tt.want {
					t.Errorf("GetKey after the crash: got the %s key, want the %s one", k.Type(), tt.want)
				}
				if tt.want == hsm.ECP256 && !samePublic(k.Public(), old.Public()) {
					t.Error("GetKey after the crash: a P-256 key that is not the old one")
				}
				signVerify(t, k)
				if keys, err := view.ListKeys(ctx); err != nil || len(keys) != 1 || keys[0].ID() != "x509-ca-A" {
					t.Errorf("ListKeys after the crash = %v, %v", keys, err)
				}
				if labels := r.labels(t, prefix); strings.Join(labels, " ") != prefix+"x509-ca-A "+prefix+"x509-ca-A" {
					t.Errorf("objects on the token after the repair: %q, want one key pair", labels)
				}
				if n, err := view.Sweep(ctx); n != 0 || err != nil {
					t.Errorf("second Sweep = %d, %v; want 0", n, err)
				}
			})
		}
	}
}

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// signVerify signs with k and checks the signature with k's public key.
func signVerify(t *testing.T, k hsm.Key) {
	t.Helper()
	d := sha256.Sum256([]byte("plinth pkcs11 test " + k.ID()))
	sig, err := k.Sign(rand.Reader, d[:], crypto.SHA256)
	if err != nil {
		t.Fatalf("Sign with %q: %v", k.ID(), err)
	}
	if !verify(k.Public(), d[:], sig) {
		t.Fatalf("the signature of %q does not verify", k.ID())
	}
}

func samePublic(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}
