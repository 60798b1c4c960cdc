package softkey

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"testing"

	"github.com/plinth-id/plinth/hsm"
)

func TestRoundTrip(t *testing.T) {
	for _, kt := range []hsm.KeyType{hsm.ECP256, hsm.ECP384, hsm.RSA2048} {
		k, err := Generate("id", kt)
		if err != nil {
			t.Fatalf("Generate(%s): %v", kt, err)
		}
		if got := Describe(k.Public()); got != string(kt) {
			t.Errorf("Describe of a %s key: got %q", kt, got)
		}
		der, err := k.MarshalPKCS8()
		if err != nil {
			t.Fatal(err)
		}
		parsed, err := ParsePKCS8("id", kt, der)
		if err != nil {
			t.Fatalf("ParsePKCS8(%s): %v", kt, err)
		}
		if !parsed.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(k.Public()) {
			t.Errorf("ParsePKCS8(%s) returned another key", kt)
		}
	}
}

func TestDescribe(t *testing.T) {
	p521, err := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ed, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		pub  crypto.PublicKey
		want string
	}{
		{&p521.PublicKey, "ec-p521"},
		{ed, "ed25519.PublicKey"},
	}
	for _, tt := range tests {
		if got := Describe(tt.pub); got != tt.want {
			t.Errorf("Describe: got %q, want %q", got, tt.want)
		}
	}
}

func TestSignAllocates(t *testing.T) {
	k, err := Generate("id", hsm.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	priv := k.signer.(*ecdsa.PrivateKey)
	digest := sha256.Sum256([]byte("allocs"))
	raw := testing.AllocsPerRun(50, func() { ecdsa.SignASN1(rand.Reader, priv, digest[:]) })
	ours := testing.AllocsPerRun(50, func() { k.Sign(rand.Reader, digest[:], crypto.SHA256) })
	if ours > raw {
		t.Errorf("Key.Sign allocates %v times, ecdsa.SignASN1 %v", ours, raw)
	}
}
