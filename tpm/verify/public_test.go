package verify_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/plinth-id/plinth/tpm/verify"
)

func wantErr(t *testing.T, err error, want string) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("error = nil, want %q", want)
	}
	if err.Error() != want {
		t.Fatalf("error = %q\n      want %q", err.Error(), want)
	}
	if _, ok := err.(*verify.Error); !ok {
		t.Fatalf("error is a %T, want *verify.Error", err)
	}
}

func TestParsePublic(t *testing.T) {
	k := eccKeys()[0]
	ecc := withKey(akTemplateECC(), &k.PublicKey)
	rsaT := withKey(akTemplateRSA(), &rsaKeys()[0].PublicKey)
	for _, tc := range []struct {
		name string
		area tpm2.TPMTPublic
	}{
		{"ecc ak", ecc},
		{"rsa ak", rsaT},
		{"ecc ek", withKey(tpm2.ECCEKTemplate, &k.PublicKey)},
		{"rsa ek", withKey(tpm2.RSAEKTemplate, &rsaKeys()[1].PublicKey)},
		{"p384", withKey(akTemplateECC(), &p384Key().PublicKey)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tpm2.Marshal(tc.area)
			p, err := verify.ParsePublic(b)
			if err != nil {
				t.Fatal(err)
			}
			name, err := tpm2.ObjectName(&tc.area)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(p.Name, name.Buffer) {
				t.Errorf("Name = %x, want %x", p.Name, name.Buffer)
			}
			if !bytes.Equal(p.Raw, b) {
				t.Error("Raw differs from the input")
			}
			b[len(b)-1] ^= 1 // Raw is a copy
			if bytes.Equal(p.Raw, b) {
				t.Error("Raw aliases the input")
			}
			want, _ := tpm2.Pub(tc.area)
			if !p.Key.(interface{ Equal(crypto.PublicKey) bool }).Equal(want) {
				t.Error("Key differs from the TPMT_PUBLIC's key")
			}
		})
	}
}

func TestParsePublicRejects(t *testing.T) {
	k := eccKeys()[0]
	good := tpm2.Marshal(withKey(akTemplateECC(), &k.PublicKey))
	mod := func(f func(*tpm2.TPMTPublic)) []byte {
		a := withKey(akTemplateECC(), &k.PublicKey)
		f(&a)
		return tpm2.Marshal(a)
	}
	offCurve := withKey(akTemplateECC(), &k.PublicKey)
	pt, _ := offCurve.Unique.ECC()
	pt.Y.Buffer = append([]byte(nil), pt.Y.Buffer...)
	pt.Y.Buffer[31] ^= 1
	rsaShort := withKey(akTemplateRSA(), &rsaKeys()[0].PublicKey)
	n, _ := rsaShort.Unique.RSA()
	n.Buffer = n.Buffer[1:]

	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "verify: public area: TPMT_PUBLIC is malformed"},
		{"truncated", good[:len(good)-1], "verify: public area: TPMT_PUBLIC is malformed"},
		{"header only", good[:4], "verify: public area: TPMT_PUBLIC is malformed"},
		{"trailing bytes", append(append([]byte(nil), good...), 0, 0), "verify: public area: TPMT_PUBLIC has trailing bytes"},
		{"keyed hash", tpm2.Marshal(tpm2.TPMTPublic{Type: tpm2.TPMAlgKeyedHash, NameAlg: tpm2.TPMAlgSHA256,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{}),
			Unique:     tpm2.NewTPMUPublicID(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BDigest{})}),
			"verify: public area: unsupported key type KEYEDHASH: only RSA and ECC keys are accepted"},
		{"null name alg", mod(func(a *tpm2.TPMTPublic) { a.NameAlg = tpm2.TPMAlgNull }), "verify: public area: unsupported name algorithm NULL"},
		{"sm3 name alg", mod(func(a *tpm2.TPMTPublic) { a.NameAlg = tpm2.TPMAlgSM3256 }), "verify: public area: unsupported name algorithm SM3-256"},
		{"point off curve", tpm2.Marshal(offCurve), "verify: public area: ECC point is not on the curve"},
		{"empty point", mod(func(a *tpm2.TPMTPublic) {
			a.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{})
		}), "verify: public area: ECC point is not on the curve"},
		{"long coordinate", mod(func(a *tpm2.TPMTPublic) {
			p, _ := a.Unique.ECC()
			p.X.Buffer = append([]byte{0}, p.X.Buffer...)
		}), "verify: public area: ECC point is not on the curve"},
		{"brainpool", mod(func(a *tpm2.TPMTPublic) {
			p, _ := a.Parameters.ECCDetail()
			p.CurveID = tpm2.TPMECCBrainpoolP256R1
		}), "verify: public area: unsupported ECC curve curve 0x0030"},
		{"rsa modulus shorter than keyBits", tpm2.Marshal(rsaShort), "verify: public area: RSA modulus does not have the declared size"},
		{"rsa 8192", func() []byte {
			a := withKey(akTemplateRSA(), &rsaKeys()[0].PublicKey)
			p, _ := a.Parameters.RSADetail()
			p.KeyBits = 8192
			n, _ := a.Unique.RSA()
			n.Buffer = bytes.Repeat([]byte{0xff}, 1024)
			return tpm2.Marshal(a)
		}(), "verify: public area: unsupported RSA key size 8192"},
		{"rsa even exponent", func() []byte {
			a := withKey(akTemplateRSA(), &rsaKeys()[0].PublicKey)
			p, _ := a.Parameters.RSADetail()
			p.Exponent = 4
			return tpm2.Marshal(a)
		}(), "verify: public area: RSA exponent is invalid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := verify.ParsePublic(tc.in)
			wantErr(t, err, tc.want)
			if p != nil {
				t.Error("got a Public with the error")
			}
		})
	}
}

// A shorter coordinate encoding is the same point, and the Name is of the
// bytes as sent.
func TestParsePublicShortCoordinate(t *testing.T) {
	for _, k := range eccKeys() {
		a := withKey(akTemplateECC(), &k.PublicKey)
		p, _ := a.Unique.ECC()
		p.X.Buffer = k.X.Bytes()
		p.Y.Buffer = k.Y.Bytes()
		pub := mustParse(t, a)
		if !pub.Key.(*ecdsa.PublicKey).Equal(&k.PublicKey) {
			t.Fatal("key differs")
		}
	}
}

func TestEKHash(t *testing.T) {
	for _, ek := range []*softEK{newECCEK(t, 0), newRSAEK(t, 0)} {
		der, err := x509.MarshalPKIXPublicKey(ek.priv.(crypto.Signer).Public())
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(der)
		got, err := verify.EKHash(ek.pub)
		if err != nil {
			t.Fatal(err)
		}
		if want := hex.EncodeToString(sum[:]); got != want {
			t.Errorf("EKHash = %s, want %s", got, want)
		}
	}
	// The hash ignores the TPM wrapping: the same key under another
	// template hashes the same.
	k := eccKeys()[0]
	a, _ := verify.EKHash(mustParse(t, withKey(tpm2.ECCEKTemplate, &k.PublicKey)))
	b, _ := verify.EKHash(mustParse(t, withKey(akTemplateECC(), &k.PublicKey)))
	if a != b {
		t.Error("EKHash depends on the template")
	}
	_, err := verify.EKHash(nil)
	wantErr(t, err, "verify: ek: no EK public key")
}

func TestCheckAK(t *testing.T) {
	k := eccKeys()[0]
	ecc := func(f func(*tpm2.TPMTPublic)) *verify.Public {
		a := withKey(akTemplateECC(), &k.PublicKey)
		if f != nil {
			f(&a)
		}
		return mustParse(t, a)
	}
	rsaAK := func(f func(*tpm2.TPMTPublic)) *verify.Public {
		a := withKey(akTemplateRSA(), &rsaKeys()[0].PublicKey)
		if f != nil {
			f(&a)
		}
		return mustParse(t, a)
	}
	ecdsaScheme := func(h tpm2.TPMAlgID) func(*tpm2.TPMTPublic) {
		return func(a *tpm2.TPMTPublic) {
			p, _ := a.Parameters.ECCDetail()
			p.Scheme = tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: h})}
		}
	}
	const schemeWant = ", want ECDSA-SHA256 on NIST P-256 or RSASSA-SHA256 with RSA-2048 or larger"
	rsa1024 := withKey(akTemplateRSA(), &rsaKeys()[0].PublicKey)
	rp, _ := rsa1024.Parameters.RSADetail()
	rp.KeyBits = 1024
	rn, _ := rsa1024.Unique.RSA()
	rn.Buffer = rn.Buffer[:128]

	for _, tc := range []struct {
		name string
		ak   *verify.Public
		want string
	}{
		{"ecc", ecc(nil), ""},
		{"rsa", rsaAK(nil), ""},
		{"nil", nil, "verify: ak: no AK public area"},
		{"not restricted", ecc(func(a *tpm2.TPMTPublic) { a.ObjectAttributes.Restricted = false }), "verify: ak: not a restricted signing key"},
		{"not sign", ecc(func(a *tpm2.TPMTPublic) { a.ObjectAttributes.SignEncrypt = false }), "verify: ak: not a restricted signing key"},
		{"decrypt", ecc(func(a *tpm2.TPMTPublic) { a.ObjectAttributes.Decrypt = true }), "verify: ak: decrypt is set: an AK must not decrypt"},
		{"no fixedTPM", ecc(func(a *tpm2.TPMTPublic) { a.ObjectAttributes.FixedTPM = false }), "verify: ak: fixedTPM is not set"},
		{"no fixedParent", ecc(func(a *tpm2.TPMTPublic) { a.ObjectAttributes.FixedParent = false }), "verify: ak: fixedParent is not set"},
		{"imported", ecc(func(a *tpm2.TPMTPublic) { a.ObjectAttributes.SensitiveDataOrigin = false }), "verify: ak: sensitiveDataOrigin is not set"},
		{"sha1 name", ecc(func(a *tpm2.TPMTPublic) { a.NameAlg = tpm2.TPMAlgSHA1 }), "verify: ak: name algorithm is SHA-1, want SHA-256 or stronger"},
		{"symmetric", ecc(func(a *tpm2.TPMTPublic) {
			p, _ := a.Parameters.ECCDetail()
			p.Symmetric = tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgAES,
				KeyBits: tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(128)),
				Mode:    tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB)}
		}), "verify: ak: symmetric algorithm is AES, want NULL"},
		{"ecdsa sha384", ecc(ecdsaScheme(tpm2.TPMAlgSHA384)), "verify: ak: signing scheme is ECDSA-SHA384 on NIST P-256" + schemeWant},
		{"null scheme", ecc(func(a *tpm2.TPMTPublic) {
			p, _ := a.Parameters.ECCDetail()
			p.Scheme = tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull}
		}), "verify: ak: signing scheme is NULL on NIST P-256" + schemeWant},
		{"p384", mustParse(t, withKey(akTemplateECC(), &p384Key().PublicKey)), "verify: ak: signing scheme is ECDSA-SHA256 on NIST P-384" + schemeWant},
		{"rsapss", rsaAK(func(a *tpm2.TPMTPublic) {
			p, _ := a.Parameters.RSADetail()
			p.Scheme = tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgRSAPSS, Details: tpm2.NewTPMUAsymScheme(
				tpm2.TPMAlgRSAPSS, &tpm2.TPMSSigSchemeRSAPSS{HashAlg: tpm2.TPMAlgSHA256})}
		}), "verify: ak: signing scheme is RSAPSS-SHA256 with RSA-2048" + schemeWant},
		{"rsa 1024", mustParse(t, rsa1024), "verify: ak: signing scheme is RSASSA-SHA256 with RSA-1024" + schemeWant},
		{"an EK", newECCEK(t, 0).pub, "verify: ak: not a restricted signing key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, verify.CheckAK(tc.ak), tc.want)
		})
	}
}

func TestCheckAgentKey(t *testing.T) {
	k := eccKeys()[1]
	key := func(f func(*tpm2.TPMTPublic)) *verify.Public {
		a := withKey(agentKeyTemplate(), &k.PublicKey)
		if f != nil {
			f(&a)
		}
		return mustParse(t, a)
	}
	p384 := withKey(agentKeyTemplate(), &p384Key().PublicKey)
	pp, _ := p384.Parameters.ECCDetail()
	pp.CurveID = tpm2.TPMECCNistP384
	rsaKey := withKey(akTemplateRSA(), &rsaKeys()[0].PublicKey)
	rsaKey.ObjectAttributes.Restricted = false

	for _, tc := range []struct {
		name string
		key  *verify.Public
		want string
	}{
		{"null scheme", key(nil), ""},
		{"ecdsa sha256", key(func(a *tpm2.TPMTPublic) {
			p, _ := a.Parameters.ECCDetail()
			p.Scheme = tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256})}
		}), ""},
		{"nil", nil, "verify: agent key: no agent key public area"},
		{"not sign", key(func(a *tpm2.TPMTPublic) { a.ObjectAttributes.SignEncrypt = false }), "verify: agent key: not a signing key"},
		{"decrypt", key(func(a *tpm2.TPMTPublic) { a.ObjectAttributes.Decrypt = true }), "verify: agent key: decrypt is set: the agent key must only sign"},
		{"restricted", key(func(a *tpm2.TPMTPublic) { a.ObjectAttributes.Restricted = true }), "verify: agent key: restricted is set: the agent key must sign arbitrary digests"},
		{"no fixedTPM", key(func(a *tpm2.TPMTPublic) { a.ObjectAttributes.FixedTPM = false }), "verify: agent key: fixedTPM is not set"},
		{"no fixedParent", key(func(a *tpm2.TPMTPublic) { a.ObjectAttributes.FixedParent = false }), "verify: agent key: fixedParent is not set"},
		{"imported", key(func(a *tpm2.TPMTPublic) { a.ObjectAttributes.SensitiveDataOrigin = false }), "verify: agent key: sensitiveDataOrigin is not set"},
		{"sha1 name", key(func(a *tpm2.TPMTPublic) { a.NameAlg = tpm2.TPMAlgSHA1 }), "verify: agent key: name algorithm is SHA-1, want SHA-256 or stronger"},
		{"p384", mustParse(t, p384), "verify: agent key: not an ECC NIST P-256 key"},
		{"rsa", mustParse(t, rsaKey), "verify: agent key: not an ECC NIST P-256 key"},
		{"ecdsa sha384", key(func(a *tpm2.TPMTPublic) {
			p, _ := a.Parameters.ECCDetail()
			p.Scheme = tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA384})}
		}), "verify: agent key: signing scheme is ECDSA-SHA384 on NIST P-256, want NULL or ECDSA-SHA256"},
		{"an AK", newECCAK(t, 0).pub, "verify: agent key: restricted is set: the agent key must sign arbitrary digests"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, verify.CheckAgentKey(tc.key), tc.want)
		})
	}
}
