//go:build cgo

package pkcs11

import (
	"crypto"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/ThalesIgnite/crypto11"
	p11 "github.com/miekg/pkcs11"

	"github.com/plinth-id/plinth/hsm"
)

// key is a key pair on the token. It implements hsm.Key.
type key struct {
	m     *Manager
	id    string
	label string // CKA_LABEL and CKA_ID: the manager's prefix and id
	typ   hsm.KeyType
	pub   crypto.PublicKey

	bound atomic.Pointer[binding] // nil until the first use on a connection
}

// binding is a key's private key object on one connection: its handle and
// the crypto11 signer that uses it. Signing with a binding looks nothing up.
//
// Caveat: if another process destroys the object and the token reuses its
// handle for another private key, the binding signs with that key, and the
// signatures do not verify with Public. SoftHSM never reuses a handle while
// the module is initialized, and this manager unbinds the keys it destroys
// itself; a namespace has one writer (see repair.go).
type binding struct {
	conn   *conn
	signer crypto11.Signer
	handle p11.ObjectHandle
}

func (k *key) ID() string               { return k.id }
func (k *key) Type() hsm.KeyType        { return k.typ }
func (k *key) Public() crypto.PublicKey { return k.pub }

// Sign signs digest on the token: ECDSA (ASN.1) for an EC key; PKCS #1 v1.5,
// or PSS if opts is an *rsa.PSSOptions, for an RSA key. The token makes the
// randomness; rand is ignored. If the token went away, Sign reopens it and
// tries once more; while it stays away, Sign fails fast with an error
// wrapping ErrUnavailable. If the key was deleted, or replaced, behind the
// key's back, the error wraps hsm.ErrNotFound.
func (k *key) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	opts, err := k.checkOpts(digest, opts)
	if err != nil {
		return nil, fmt.Errorf("pkcs11: cannot sign with key %q: %w", k.id, err)
	}
	var sig []byte
	err = k.m.do(func(c *conn) error {
		b := k.bound.Load()
		if b == nil || b.conn != c {
			if b, err = k.bind(c); err != nil {
				return err
			}
		}
		sig, err = b.signer.Sign(nil, digest, opts)
		if err == nil || !(isCKR(err, p11.CKR_OBJECT_HANDLE_INVALID) || isCKR(err, p11.CKR_KEY_HANDLE_INVALID)) || c.probe() != nil {
			return err
		}
		// The token is there, but the handle is not: the key was deleted
		// or replaced behind our back, or the token renumbered its objects.
		k.bound.CompareAndSwap(b, nil)
		if b, err = k.bind(c); err != nil {
			return err
		}
		sig, err = b.signer.Sign(nil, digest, opts)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("pkcs11: cannot sign with key %q: %w", k.id, err)
	}
	return sig, nil
}

// bind finds the key's private key object on c: the same key pair, by its
// label and public key.
func (k *key) bind(c *conn) (*binding, error) {
	h, err := c.privateKey(k.label)
	if errors.Is(err, errMissing) {
		return nil, fmt.Errorf("it is no longer on token %q: %w", c.token, hsm.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	signer, err := c.c11.FindKeyPair(nil, []byte(k.label))
	switch {
	case err != nil:
		return nil, fmt.Errorf("C_FindObjects: %w", err)
	case signer == nil:
		return nil, fmt.Errorf("token %q has its private key but no public key with its CKA_ID", c.token)
	case !samePublic(signer.Public(), k.pub):
		return nil, fmt.Errorf("token %q holds another key under its ID now (get that one with GetKey): %w", c.token, hsm.ErrNotFound)
	}
	b := &binding{conn: c, signer: signer, handle: h}
	k.bound.Store(b)
	return b, nil
}

// checkOpts refuses what crypto11 would sign wrongly instead of refusing, and
// turns PSSSaltLengthAuto, which crypto11 does not support, into
// PSSSaltLengthEqualsHash: a salt as long as the hash, which every verifier
// of PSS with that hash accepts.
func (k *key) checkOpts(digest []byte, opts crypto.SignerOpts) (crypto.SignerOpts, error) {
	if opts == nil {
		if _, ok := k.pub.(*rsa.PublicKey); ok {
			return nil, errors.New("RSA signing needs options (a hash or *rsa.PSSOptions), got nil")
		}
		return crypto.Hash(0), nil
	}
	h := opts.HashFunc()
	if h != 0 && len(digest) != h.Size() {
		return nil, fmt.Errorf("digest has %d bytes, but a %v digest has %d", len(digest), h, h.Size())
	}
	if _, ok := k.pub.(*rsa.PublicKey); !ok {
		return opts, nil // ECDSA signs the digest, whatever the hash
	}
	switch h {
	case crypto.SHA1, crypto.SHA224, crypto.SHA256, crypto.SHA384, crypto.SHA512:
	default:
		if _, pss := opts.(*rsa.PSSOptions); pss || h != 0 {
			return nil, fmt.Errorf("RSA signatures with hash %v are not supported", h)
		}
		// PKCS #1 v1.5 over a digest the caller has already wrapped.
	}
	if pss, ok := opts.(*rsa.PSSOptions); ok && pss.SaltLength == rsa.PSSSaltLengthAuto {
		o := *pss
		o.SaltLength = rsa.PSSSaltLengthEqualsHash
		return &o, nil
	}
	return opts, nil
}

func samePublic(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}
