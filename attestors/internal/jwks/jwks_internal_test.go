package jwks

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

func TestCacheTTL(t *testing.T) {
	tests := []struct {
		header string
		want   time.Duration
	}{
		{"", time.Hour},
		{"public, max-age=21208, must-revalidate, no-transform", 21208 * time.Second},
		{"MAX-AGE=600", 10 * time.Minute},
		{`max-age="600"`, 10 * time.Minute},
		{"max-age=0", time.Minute},
		{"no-cache", time.Hour},
		{"max-age=-5", time.Hour},
		{"max-age=abc", time.Hour},
		{"max-age=99999999999999999", 24 * time.Hour},
		{"max-age=604800", 24 * time.Hour},
	}
	for _, tt := range tests {
		if got := cacheTTL(tt.header); got != tt.want {
			t.Errorf("cacheTTL(%q) = %s, want %s", tt.header, got, tt.want)
		}
	}
}

func jwk(t *testing.T, k jose.JSONWebKey) string {
	t.Helper()
	b, err := k.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestParseJWKSIsStrict(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	short, _ := rsa.GenerateKey(rand.Reader, 1024)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	good := jwk(t, jose.JSONWebKey{Key: rsaKey.Public(), KeyID: "a", Algorithm: "RS256", Use: "sig"})
	tests := []struct {
		name, jwks, want string
	}{
		{"not JSON", "-----BEGIN CERTIFICATE-----", "malformed JWKS: invalid character '-' in numeric literal"},
		{"no keys member", `{"a":"b"}`, `malformed JWKS: no "keys" member`},
		{"private key", `{"keys":[` + jwk(t, jose.JSONWebKey{Key: rsaKey, KeyID: "a"}) + `]}`, "JWKS key 0: holds private key material; give public keys only"},
		{"symmetric key", `{"keys":[{"kty":"oct","kid":"a","k":"c2VjcmV0"}]}`, "JWKS key 0: holds private key material; give public keys only"},
		{"EC key", `{"keys":[` + jwk(t, jose.JSONWebKey{Key: ecKey.Public(), KeyID: "a"}) + `]}`, `JWKS key 0: key "a" is a *ecdsa.PublicKey, not an RSA public key`},
		{"short RSA key", `{"keys":[` + jwk(t, jose.JSONWebKey{Key: short.Public(), KeyID: "a"}) + `]}`, `JWKS key 0: key "a" is RSA-1024; at least 2048 bits are required`},
		{"encryption key", `{"keys":[` + jwk(t, jose.JSONWebKey{Key: rsaKey.Public(), KeyID: "a", Use: "enc"}) + `]}`, `JWKS key 0: key "a" is for use "enc", not sig`},
		{"other algorithm", `{"keys":[` + jwk(t, jose.JSONWebKey{Key: rsaKey.Public(), KeyID: "a", Algorithm: "PS256"}) + `]}`, `JWKS key 0: key "a" is for PS256, not RS256`},
		{"no key ID", `{"keys":[` + jwk(t, jose.JSONWebKey{Key: rsaKey.Public()}) + `]}`, "JWKS key 0: has no key ID (kid)"},
		{"duplicate key ID", `{"keys":[` + good + `,` + good + `]}`, `JWKS key 1: key ID "a" appears twice`},
		{"broken key", `{"keys":[{"kty":"RSA","kid":"a","n":"AQAB"}]}`, "JWKS key 0: malformed key: go-jose/go-jose: invalid RSA key, missing n/e values"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseJWKS([]byte(tt.jwks)); err == nil || err.Error() != tt.want {
				t.Fatalf("ParseJWKS = %v, want %q", err, tt.want)
			}
		})
	}
	// Downloaded sets skip what they cannot use and keep the rest.
	var skipped []string
	keys, err := parseJWKS([]byte(`{"keys":[`+jwk(t, jose.JSONWebKey{Key: ecKey.Public(), KeyID: "ec"})+`,`+good+`]}`), false,
		func(i int, err error) { skipped = append(skipped, err.Error()) })
	if err != nil || len(keys) != 1 || keys["a"] == nil || len(skipped) != 1 {
		t.Fatalf("parseJWKS = %v, %v; skipped %q", keys, err, skipped)
	}
}
