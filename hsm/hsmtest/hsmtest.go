package hsmtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/plinth-id/plinth/hsm"
)

// Run runs the contract suite against the backend open returns, each check
// in its own subtest on a fresh manager. open(t) returns a manager that holds
// no keys. reopen(t), if not nil, returns a new manager over the storage that
// open(t) made for the same t; the suite calls it after open(t), while the
// first manager is still in use.
func Run(t *testing.T, open func(t *testing.T) hsm.KeyManager, reopen func(t *testing.T) hsm.KeyManager) {
	t.Helper()
	s := suite{open: open, reopen: reopen}
	t.Run("KeyTypes", s.keyTypes)
	t.Run("GetKeyNotFound", s.getKeyNotFound)
	t.Run("EmptyID", s.emptyID)
	t.Run("UnknownKeyType", s.unknownKeyType)
	t.Run("Replace", s.replace)
	t.Run("ListKeys", s.listKeys)
	t.Run("Delete", s.delete)
	t.Run("ConcurrentSign", s.concurrentSign)
	t.Run("ConcurrentGenerate", s.concurrentGenerate)
	t.Run("ConcurrentReplace", s.concurrentReplace)
}

// BenchmarkSign measures Sign with an ECDSA P-256 key that m generates under
// the ID "hsmtest-bench", over the SHA-256 digest of "plinth hsm benchmark"
// with crypto.SHA256: the work of one ecdsa.SignASN1 over that digest.
func BenchmarkSign(b *testing.B, m hsm.KeyManager) {
	b.Helper()
	k, err := m.GenerateKey(b.Context(), "hsmtest-bench", hsm.ECP256)
	if err != nil {
		b.Fatalf("GenerateKey: %v", err)
	}
	digest := sha256.Sum256([]byte("plinth hsm benchmark"))
	if err := signAndVerify(k, digest[:]); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := k.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
			b.Fatalf("Sign: %v", err)
		}
	}
}

type suite struct {
	open, reopen func(t *testing.T) hsm.KeyManager
}

// views returns m and, for a persistent backend, a manager reopened over the
// same storage: what m holds must be what a restarted process finds.
func (s suite) views(t *testing.T, m hsm.KeyManager) map[string]hsm.KeyManager {
	t.Helper()
	v := map[string]hsm.KeyManager{"open": m}
	if s.reopen != nil {
		v["reopened"] = s.reopen(t)
	}
	return v
}

var allTypes = []hsm.KeyType{hsm.ECP256, hsm.ECP384, hsm.RSA2048, hsm.RSA4096}

func (s suite) keyTypes(t *testing.T) {
	m := s.open(t)
	pubs := make(map[hsm.KeyType]crypto.PublicKey)
	for _, kt := range allTypes {
		t.Run(string(kt), func(t *testing.T) {
			id := "key-" + string(kt)
			k, err := m.GenerateKey(t.Context(), id, kt)
			if err != nil {
				t.Fatalf("GenerateKey(%q, %s): %v", id, kt, err)
			}
			if err := checkKey(k, id, kt); err != nil {
				t.Fatalf("GenerateKey: %v", err)
			}
			if err := signAndVerify(k, digestOf(id)); err != nil {
				t.Fatal(err)
			}
			pubs[kt] = k.Public()
		})
	}
	for name, v := range s.views(t, m) {
		for _, kt := range allTypes {
			if pubs[kt] == nil {
				continue // its subtest failed
			}
			id := "key-" + string(kt)
			k, err := v.GetKey(t.Context(), id)
			if err != nil {
				t.Errorf("%s: GetKey(%q): %v", name, id, err)
				continue
			}
			if err := checkKey(k, id, kt); err != nil {
				t.Errorf("%s: GetKey: %v", name, err)
				continue
			}
			if !samePublic(k.Public(), pubs[kt]) {
				t.Errorf("%s: GetKey(%q) returned a different public key than GenerateKey", name, id)
			}
			if err := signAndVerify(k, digestOf(name+id)); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}
	}
}

func (s suite) getKeyNotFound(t *testing.T) {
	ctx := t.Context()
	m := s.open(t)
	if _, err := m.GetKey(ctx, "missing"); !errors.Is(err, hsm.ErrNotFound) {
		t.Fatalf("GetKey(missing) on an empty manager: got error %v, want one wrapping hsm.ErrNotFound", err)
	}
	if _, err := m.GenerateKey(ctx, "present", hsm.ECP256); err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	for name, v := range s.views(t, m) {
		if _, err := v.GetKey(ctx, "missing"); !errors.Is(err, hsm.ErrNotFound) {
			t.Errorf("%s: GetKey(missing): got error %v, want one wrapping hsm.ErrNotFound", name, err)
		}
	}
}

func (s suite) emptyID(t *testing.T) {
	ctx := t.Context()
	m := s.open(t)
	if _, err := m.GenerateKey(ctx, "", hsm.ECP256); err == nil {
		t.Fatal("GenerateKey with an empty ID: no error")
	}
	for name, v := range s.views(t, m) {
		assertIDs(t, name, v)
	}
}

func (s suite) unknownKeyType(t *testing.T) {
	ctx := t.Context()
	m := s.open(t)
	for _, kt := range []hsm.KeyType{"", "ec-p521", "EC-P256", "ed25519"} {
		if _, err := m.GenerateKey(ctx, "unknown", kt); err == nil {
			t.Errorf("GenerateKey(unknown, %q): no error", kt)
		}
	}
	keep, err := m.GenerateKey(ctx, "keep", hsm.ECP256)
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	if _, err := m.GenerateKey(ctx, "keep", "rsa-1024"); err == nil {
		t.Fatal("GenerateKey(keep, rsa-1024): no error")
	}
	for name, v := range s.views(t, m) {
		if _, err := v.GetKey(ctx, "unknown"); !errors.Is(err, hsm.ErrNotFound) {
			t.Errorf("%s: after failed GenerateKey, GetKey(unknown): got error %v, want one wrapping hsm.ErrNotFound", name, err)
		}
		k, err := v.GetKey(ctx, "keep")
		if err != nil {
			t.Errorf("%s: a failed GenerateKey lost the key it would have replaced: %v", name, err)
			continue
		}
		if err := checkKey(k, "keep", hsm.ECP256); err != nil || !samePublic(k.Public(), keep.Public()) {
			t.Errorf("%s: a failed GenerateKey changed the key it would have replaced (%v)", name, err)
		}
		assertIDs(t, name, v, "keep")
	}
}

func (s suite) replace(t *testing.T) {
	ctx := t.Context()
	m := s.open(t)
	const id = "x509-ca-A"
	old, err := m.GenerateKey(ctx, id, hsm.ECP256)
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	newer, err := m.GenerateKey(ctx, id, hsm.ECP384)
	if err != nil {
		t.Fatalf("GenerateKey replacing a key: %v", err)
	}
	if err := checkKey(newer, id, hsm.ECP384); err != nil {
		t.Fatalf("GenerateKey replacing a key: %v", err)
	}
	for name, v := range s.views(t, m) {
		k, err := v.GetKey(ctx, id)
		if err != nil {
			t.Errorf("%s: GetKey after replacement: %v", name, err)
			continue
		}
		if err := checkKey(k, id, hsm.ECP384); err != nil {
			t.Errorf("%s: GetKey after replacement: %v", name, err)
		}
		if samePublic(k.Public(), old.Public()) {
			t.Errorf("%s: GetKey after replacement returned the old key", name)
		} else if !samePublic(k.Public(), newer.Public()) {
			t.Errorf("%s: GetKey after replacement returned neither the old key nor the new one", name)
		}
		if err := signAndVerify(k, digestOf(name)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		assertIDs(t, name, v, id)
	}
}

func (s suite) listKeys(t *testing.T) {
	ctx := t.Context()
	m := s.open(t)
	assertIDs(t, "empty", m)
	pubs := make(map[string]crypto.PublicKey)
	for _, id := range []string{"x509-ca-B", "jwt-A", "x509-ca-A", "jwt-B"} {
		k, err := m.GenerateKey(ctx, id, hsm.ECP256)
		if err != nil {
			t.Fatalf("GenerateKey(%q): %v", id, err)
		}
		pubs[id] = k.Public()
	}
	for name, v := range s.views(t, m) {
		keys := assertIDs(t, name, v, "jwt-A", "jwt-B", "x509-ca-A", "x509-ca-B")
		for _, k := range keys {
			if err := checkKey(k, k.ID(), hsm.ECP256); err != nil {
				t.Errorf("%s: ListKeys: %v", name, err)
			}
			if !samePublic(k.Public(), pubs[k.ID()]) {
				t.Errorf("%s: ListKeys: key %q has a different public key than GenerateKey returned", name, k.ID())
			}
		}
	}
}

func (s suite) delete(t *testing.T) {
	ctx := t.Context()
	m := s.open(t)
	d, ok := m.(hsm.Deleter)
	if !ok {
		t.Skipf("%T does not implement hsm.Deleter", m)
	}
	for _, id := range []string{"delete-me", "keep"} {
		if _, err := m.GenerateKey(ctx, id, hsm.ECP256); err != nil {
			t.Fatalf("GenerateKey(%q): %v", id, err)
		}
	}
	if err := d.DeleteKey(ctx, "delete-me"); err != nil {
		t.Fatalf("DeleteKey: %v", err)
	}
	if err := d.DeleteKey(ctx, "delete-me"); !errors.Is(err, hsm.ErrNotFound) {
		t.Errorf("DeleteKey of a deleted key: got error %v, want one wrapping hsm.ErrNotFound", err)
	}
	for name, v := range s.views(t, m) {
		if _, err := v.GetKey(ctx, "delete-me"); !errors.Is(err, hsm.ErrNotFound) {
			t.Errorf("%s: GetKey after DeleteKey: got error %v, want one wrapping hsm.ErrNotFound", name, err)
		}
		assertIDs(t, name, v, "keep")
	}
	if _, err := m.GenerateKey(ctx, "delete-me", hsm.ECP256); err != nil {
		t.Fatalf("GenerateKey after DeleteKey: %v", err)
	}
	assertIDs(t, "regenerated", m, "delete-me", "keep")
}

// concurrentSign signs from 8 goroutines at once with an EC and an RSA key,
// half of them fetching the key again for every signature.
func (s suite) concurrentSign(t *testing.T) {
	ctx := t.Context()
	m := s.open(t)
	ids := []string{"sign-ec", "sign-rsa"}
	for i, kt := range []hsm.KeyType{hsm.ECP256, hsm.RSA2048} {
		if _, err := m.GenerateKey(ctx, ids[i], kt); err != nil {
			t.Fatalf("GenerateKey(%q): %v", ids[i], err)
		}
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			var k hsm.Key
			for i := range 12 {
				id := ids[0]
				if (g+i)%4 == 0 {
					id = ids[1]
				}
				if g%2 == 0 || k == nil || k.ID() != id {
					var err error
					if k, err = m.GetKey(ctx, id); err != nil {
						t.Errorf("goroutine %d: GetKey(%q): %v", g, id, err)
						return
					}
				}
				if err := signAndVerify(k, digestOf(fmt.Sprint(g, i))); err != nil {
					t.Errorf("goroutine %d: %v", g, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// concurrentGenerate generates 8 keys under different IDs at once, while
// other goroutines read.
func (s suite) concurrentGenerate(t *testing.T) {
	ctx := t.Context()
	m := s.open(t)
	const n = 8
	ids := make([]string, n)
	pubs := make([]crypto.PublicKey, n)
	var wg sync.WaitGroup
	for i := range n {
		ids[i] = fmt.Sprintf("concurrent-%d", i)
		wg.Go(func() {
			k, err := m.GenerateKey(ctx, ids[i], hsm.ECP256)
			if err != nil {
				t.Errorf("GenerateKey(%q): %v", ids[i], err)
				return
			}
			pubs[i] = k.Public()
		})
		wg.Go(func() {
			if _, err := m.ListKeys(ctx); err != nil {
				t.Errorf("ListKeys during GenerateKey: %v", err)
			}
			if _, err := m.GetKey(ctx, ids[i]); err != nil && !errors.Is(err, hsm.ErrNotFound) {
				t.Errorf("GetKey during GenerateKey: %v", err)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for name, v := range s.views(t, m) {
		for _, k := range assertIDs(t, name, v, ids...) {
			i := slices.Index(ids, k.ID())
			if i < 0 || !samePublic(k.Public(), pubs[i]) {
				t.Errorf("%s: key %q is not the one GenerateKey returned", name, k.ID())
			}
		}
	}
}

// concurrentReplace generates 4 keys under one ID at once: afterwards the
// ID holds one of them, the same one for every view.
func (s suite) concurrentReplace(t *testing.T) {
	ctx := t.Context()
	m := s.open(t)
	const id, n = "contended", 4
	pubs := make([]crypto.PublicKey, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			k, err := m.GenerateKey(ctx, id, hsm.ECP256)
			if err != nil {
				t.Errorf("GenerateKey: %v", err)
				return
			}
			pubs[i] = k.Public()
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	winner, err := m.GetKey(ctx, id)
	if err != nil {
		t.Fatalf("GetKey: %v", err)
	}
	if !slices.ContainsFunc(pubs, func(p crypto.PublicKey) bool { return samePublic(p, winner.Public()) }) {
		t.Fatal("GetKey returned a key that no GenerateKey call returned")
	}
	for name, v := range s.views(t, m) {
		k, err := v.GetKey(ctx, id)
		if err != nil {
			t.Errorf("%s: GetKey: %v", name, err)
			continue
		}
		if !samePublic(k.Public(), winner.Public()) {
			t.Errorf("%s: GetKey returned a different key than the first manager holds", name)
		}
		assertIDs(t, name, v, id)
	}
}

// assertIDs checks that ListKeys returns keys with exactly the IDs want, in
// that order, and returns the keys.
func assertIDs(t *testing.T, name string, m hsm.KeyManager, want ...string) []hsm.Key {
	t.Helper()
	keys, err := m.ListKeys(t.Context())
	if err != nil {
		t.Errorf("%s: ListKeys: %v", name, err)
		return nil
	}
	got := make([]string, 0, len(keys))
	for _, k := range keys {
		got = append(got, k.ID())
	}
	if want == nil {
		want = []string{}
	}
	if !slices.Equal(got, want) {
		t.Errorf("%s: ListKeys returned IDs %q, want %q", name, got, want)
	}
	return keys
}

// checkKey checks a key's ID, type, and that its public key has the algorithm
// and curve or size the type names.
func checkKey(k hsm.Key, id string, kt hsm.KeyType) error {
	if k == nil {
		return fmt.Errorf("key %q is nil", id)
	}
	if k.ID() != id {
		return fmt.Errorf("key has ID %q, want %q", k.ID(), id)
	}
	if k.Type() != kt {
		return fmt.Errorf("key %q has Type %q, want %q", id, k.Type(), kt)
	}
	var curve string
	var bits int
	switch kt {
	case hsm.ECP256:
		curve = "P-256"
	case hsm.ECP384:
		curve = "P-384"
	case hsm.RSA2048:
		bits = 2048
	case hsm.RSA4096:
		bits = 4096
	default:
		return fmt.Errorf("key %q has unknown type %q", id, kt)
	}
	switch pub := k.Public().(type) {
	case *ecdsa.PublicKey:
		if curve == "" || pub.Curve.Params().Name != curve {
			return fmt.Errorf("key %q of type %s has an ECDSA %s public key", id, kt, pub.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if bits == 0 || pub.N.BitLen() != bits {
			return fmt.Errorf("key %q of type %s has an RSA %d-bit public key", id, kt, pub.N.BitLen())
		}
	default:
		return fmt.Errorf("key %q of type %s has a public key of type %T", id, kt, pub)
	}
	return nil
}

// signAndVerify signs digest with k and verifies the signature with k's
// public key: ECDSA ASN.1 for EC keys, PKCS #1 v1.5 and PSS for RSA keys. It
// also checks that the signature does not verify for another digest.
func signAndVerify(k hsm.Key, digest []byte) error {
	other := sha256.Sum256(append([]byte("other "), digest...))
	switch pub := k.Public().(type) {
	case *ecdsa.PublicKey:
		sig, err := k.Sign(rand.Reader, digest, crypto.SHA256)
		if err != nil {
			return fmt.Errorf("key %q: Sign: %v", k.ID(), err)
		}
		if !ecdsa.VerifyASN1(pub, digest, sig) {
			return fmt.Errorf("key %q: ECDSA signature does not verify with its public key", k.ID())
		}
		if ecdsa.VerifyASN1(pub, other[:], sig) {
			return fmt.Errorf("key %q: ECDSA signature verifies for a different digest", k.ID())
		}
	case *rsa.PublicKey:
		sig, err := k.Sign(rand.Reader, digest, crypto.SHA256)
		if err != nil {
			return fmt.Errorf("key %q: Sign PKCS #1 v1.5: %v", k.ID(), err)
		}
		if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest, sig); err != nil {
			return fmt.Errorf("key %q: PKCS #1 v1.5 signature does not verify with its public key: %v", k.ID(), err)
		}
		if rsa.VerifyPKCS1v15(pub, crypto.SHA256, other[:], sig) == nil {
			return fmt.Errorf("key %q: PKCS #1 v1.5 signature verifies for a different digest", k.ID())
		}
		pss := &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
		if sig, err = k.Sign(rand.Reader, digest, pss); err != nil {
			return fmt.Errorf("key %q: Sign PSS: %v", k.ID(), err)
		}
		if err := rsa.VerifyPSS(pub, crypto.SHA256, digest, sig, pss); err != nil {
			return fmt.Errorf("key %q: PSS signature does not verify with its public key: %v", k.ID(), err)
		}
		if rsa.VerifyPSS(pub, crypto.SHA256, other[:], sig, pss) == nil {
			return fmt.Errorf("key %q: PSS signature verifies for a different digest", k.ID())
		}
	default:
		return fmt.Errorf("key %q: public key of type %T", k.ID(), pub)
	}
	return nil
}

func digestOf(s string) []byte {
	d := sha256.Sum256([]byte("plinth hsmtest " + s))
	return d[:]
}

func samePublic(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}
