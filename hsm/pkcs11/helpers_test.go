//go:build cgo

package pkcs11_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/asn1"
	"io"
	"log/slog"
	"testing"

	p11 "github.com/miekg/pkcs11"
)

func slogger(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }

func verify(pub crypto.PublicKey, digest, sig []byte) bool {
	switch pub := pub.(type) {
	case *ecdsa.PublicKey:
		return ecdsa.VerifyASN1(pub, digest, sig)
	case *rsa.PublicKey:
		return rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest, sig) == nil
	}
	return false
}

// importECKey creates a P-256 key pair made outside the token on it, under
// the label and with CKA_ID 01 02, as an operator importing a key with
// pkcs11-tool would; the private key is neither sensitive nor, if
// extractable, protected from export.
func importECKey(t *testing.T, label string, extractable bool) *ecdsa.PrivateKey {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	e, err := priv.ECDH()
	if err != nil {
		t.Fatal(err)
	}
	point, err := asn1.Marshal(e.PublicKey().Bytes())
	if err != nil {
		t.Fatal(err)
	}
	params, err := asn1.Marshal(asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}) // prime256v1
	if err != nil {
		t.Fatal(err)
	}
	r := rawSession(t, softhsm.TokenLabel)
	common := func(class uint) []*p11.Attribute {
		return []*p11.Attribute{
			p11.NewAttribute(p11.CKA_CLASS, class),
			p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_EC),
			p11.NewAttribute(p11.CKA_TOKEN, true),
			p11.NewAttribute(p11.CKA_LABEL, label),
			p11.NewAttribute(p11.CKA_ID, []byte{1, 2}),
			p11.NewAttribute(p11.CKA_EC_PARAMS, params),
		}
	}
	if _, err := r.CreateObject(r.s, append(common(p11.CKO_PUBLIC_KEY),
		p11.NewAttribute(p11.CKA_EC_POINT, point),
		p11.NewAttribute(p11.CKA_VERIFY, true),
	)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.CreateObject(r.s, append(common(p11.CKO_PRIVATE_KEY),
		p11.NewAttribute(p11.CKA_VALUE, e.Bytes()),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SIGN, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, false),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, extractable),
	)); err != nil {
		t.Fatal(err)
	}
	return priv
}
