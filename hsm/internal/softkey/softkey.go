// Package softkey holds private keys in process memory for the memory and
// disk backends: it generates them, encodes them as PKCS #8 and signs with
// them at the cost of crypto's own Sign and nothing more.
package softkey

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"io"
	"strings"

	"github.com/plinth-id/plinth/hsm"
)

// Key is a private key in memory. It implements hsm.Key. Sign takes no lock
// and allocates nothing of its own, so it may be called from any number of
// goroutines at the speed of crypto/ecdsa and crypto/rsa.
type Key struct {
	id     string
	typ    hsm.KeyType
	signer crypto.Signer // *ecdsa.PrivateKey or *rsa.PrivateKey, never written after New
}

// Generate creates a key of type t under id.
func Generate(id string, t hsm.KeyType) (*Key, error) {
	var (
		s   crypto.Signer
		err error
	)
	switch t {
	case hsm.ECP256:
		s, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case hsm.ECP384:
		s, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case hsm.RSA2048:
		s, err = rsa.GenerateKey(rand.Reader, 2048)
	case hsm.RSA4096:
		s, err = rsa.GenerateKey(rand.Reader, 4096)
	default:
		_, err := hsm.ParseKeyType(string(t))
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("generating %s key: %w", t, err)
	}
	return &Key{id: id, typ: t, signer: s}, nil
}

// ParsePKCS8 returns the key in PKCS #8 DER form der, which must be of type t.
func ParsePKCS8(id string, t hsm.KeyType, der []byte) (*Key, error) {
	if _, err := hsm.ParseKeyType(string(t)); err != nil {
		return nil, err
	}
	priv, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("PKCS #8 key: %w", err)
	}
	s, ok := priv.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("PKCS #8 key is a %T, which cannot sign", priv)
	}
	if got := Describe(s.Public()); got != string(t) {
		return nil, fmt.Errorf("type %s does not match its PKCS #8 key (%s)", t, got)
	}
	return &Key{id: id, typ: t, signer: s}, nil
}

// Describe names the type of a public key: a KeyType when it is one, such as
// "ec-p256", else a description such as "rsa-1024" or "ed25519.PublicKey".
func Describe(pub crypto.PublicKey) string {
	switch pub := pub.(type) {
	case *ecdsa.PublicKey:
		switch pub.Curve {
		case elliptic.P256():
			return string(hsm.ECP256)
		case elliptic.P384():
			return string(hsm.ECP384)
		}
		return "ec-" + strings.ToLower(strings.ReplaceAll(pub.Curve.Params().Name, "-", ""))
	case *rsa.PublicKey:
		return fmt.Sprintf("rsa-%d", pub.N.BitLen())
	}
	return fmt.Sprintf("%T", pub)
}

// MarshalPKCS8 returns the private key in PKCS #8 DER form.
func (k *Key) MarshalPKCS8() ([]byte, error) {
	return x509.MarshalPKCS8PrivateKey(k.signer)
}

// ID returns the key's ID.
func (k *Key) ID() string { return k.id }

// Type returns the key's type.
func (k *Key) Type() hsm.KeyType { return k.typ }

// Public returns the *ecdsa.PublicKey or *rsa.PublicKey of the key.
func (k *Key) Public() crypto.PublicKey { return k.signer.Public() }

// Sign signs digest as (*ecdsa.PrivateKey).Sign or (*rsa.PrivateKey).Sign do.
func (k *Key) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return k.signer.Sign(rand, digest, opts)
}
