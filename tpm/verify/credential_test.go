package verify_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/rsa"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/plinth-id/plinth/tpm/verify"
)

// softActivate is TPM2_ActivateCredential (TPM 2.0 Part 1, "Credential
// Protection") done with the EK's private key in Go: recover the seed,
// check the HMAC over the encrypted credential and the AK Name, decrypt.
// The real TPM does the same in verify_sim_test.go.
func softActivate(ek *softEK, akName, idObject, encSecret []byte) ([]byte, error) {
	h, err := ek.pub.Area.NameAlg.Hash()
	if err != nil {
		return nil, err
	}
	var seed []byte
	switch k := ek.priv.(type) {
	case *ecdsa.PrivateKey:
		eph, err := tpm2.Unmarshal[tpm2.TPMSECCPoint](encSecret)
		if err != nil {
			return nil, err
		}
		size := (k.Curve.Params().BitSize + 7) / 8
		ephPub, err := ecdsa.ParseUncompressedPublicKey(k.Curve, append(append([]byte{4}, eph.X.Buffer...), eph.Y.Buffer...))
		if err != nil {
			return nil, err
		}
		ephECDH, _ := ephPub.ECDH()
		priv, _ := k.ECDH()
		z, err := priv.ECDH(ephECDH)
		if err != nil {
			return nil, err
		}
		seed = tpm2.KDFe(h, z, "IDENTITY", eph.X.Buffer, k.X.FillBytes(make([]byte, size)), h.Size()*8)
	case *rsa.PrivateKey:
		seed, err = rsa.DecryptOAEP(h.New(), nil, k, encSecret, []byte("IDENTITY\x00"))
		if err != nil {
			return nil, err
		}
	}
	if len(idObject) < 2 {
		return nil, errors.New("short idObject")
	}
	n := int(binary.BigEndian.Uint16(idObject))
	if len(idObject) < 2+n {
		return nil, errors.New("short idObject")
	}
	integrity, encIdentity := idObject[2:2+n], idObject[2+n:]
	mac := hmac.New(h.New, tpm2.KDFa(h, seed, "INTEGRITY", nil, nil, h.Size()*8))
	mac.Write(encIdentity)
	mac.Write(akName)
	if !hmac.Equal(mac.Sum(nil), integrity) {
		return nil, errors.New("integrity check failed")
	}
	var bits int
	switch p := ek.pub.Area.Parameters; ek.pub.Area.Type {
	case tpm2.TPMAlgECC:
		d, _ := p.ECCDetail()
		b, _ := d.Symmetric.KeyBits.AES()
		bits = int(*b)
	case tpm2.TPMAlgRSA:
		d, _ := p.RSADetail()
		b, _ := d.Symmetric.KeyBits.AES()
		bits = int(*b)
	}
	block, err := aes.NewCipher(tpm2.KDFa(h, seed, "STORAGE", akName, nil, bits))
	if err != nil {
		return nil, err
	}
	plain := make([]byte, len(encIdentity))
	//lint:ignore SA1019 CFB is what the TPM specifies for credential protection.
	cipher.NewCFBDecrypter(block, make([]byte, block.BlockSize())).XORKeyStream(plain, encIdentity)
	cred, err := tpm2.Unmarshal[tpm2.TPM2BDigest](plain)
	if err != nil {
		return nil, err
	}
	return cred.Buffer, nil
}

func TestMakeCredential(t *testing.T) {
	ak := newECCAK(t, 3)
	secret := bytes.Repeat([]byte{0x5e}, 32)
	for _, tc := range []struct {
		name                   string
		ek                     *softEK
		idObjectLen, encSecLen int
	}{
		{"ecc p256 ek", newECCEK(t, 0), 2 + 32 + 2 + 32, 2 + 32 + 2 + 32},
		{"ecc p384 ek, sha384", &softEK{pub: mustParse(t, tpmECCEKTemplate()), priv: p384Key()}, 2 + 48 + 2 + 32, 2 + 48 + 2 + 48},
		{"rsa 2048 ek", newRSAEK(t, 0), 2 + 32 + 2 + 32, 256},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id1, enc1, err := verify.MakeCredential(tc.ek.pub, ak.pub.Name, secret)
			if err != nil {
				t.Fatal(err)
			}
			id2, enc2, err := verify.MakeCredential(tc.ek.pub, ak.pub.Name, secret)
			if err != nil {
				t.Fatal(err)
			}
			if len(id1) != tc.idObjectLen || len(id2) != tc.idObjectLen || len(enc1) != tc.encSecLen || len(enc2) != tc.encSecLen {
				t.Errorf("sizes %d/%d and %d/%d, want %d and %d", len(id1), len(id2), len(enc1), len(enc2), tc.idObjectLen, tc.encSecLen)
			}
			if bytes.Equal(id1, id2) || bytes.Equal(enc1, enc2) {
				t.Error("two challenges for the same secret are equal: the seed is not fresh")
			}
			got, err := softActivate(tc.ek, ak.pub.Name, id1, enc1)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, secret) {
				t.Fatalf("activated %x, want %x", got, secret)
			}
			// The credential is bound to the AK's Name: another AK (or the
			// same key with other attributes) cannot activate it.
			if _, err := softActivate(tc.ek, newECCAK(t, 2).pub.Name, id1, enc1); err == nil {
				t.Error("activated with another AK's Name")
			}
			// And to the EK.
			if tc.ek.pub.Area.Type == tpm2.TPMAlgECC && tc.ek.pub.Area.NameAlg == tpm2.TPMAlgSHA256 {
				if _, err := softActivate(newECCEK(t, 1), ak.pub.Name, id1, enc1); err == nil {
					t.Error("activated with another EK")
				}
			}
		})
	}
}

func TestMakeCredentialRejects(t *testing.T) {
	ek := newECCEK(t, 0).pub
	ak := newECCAK(t, 1).pub
	secret := bytes.Repeat([]byte{1}, 32)
	sha1Name := append([]byte{0, 4}, make([]byte, 20)...)
	noAES := withKey(tpm2.ECCEKTemplate, &eccKeys()[0].PublicKey)
	p, _ := noAES.Parameters.ECCDetail()
	p.Symmetric = tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull}
	const c = "verify: credential: "
	for _, tc := range []struct {
		name   string
		ek     *verify.Public
		akName []byte
		secret []byte
		err    string
	}{
		{"good", ek, ak.Name, secret, ""},
		{"16-byte secret", ek, ak.Name, secret[:16], ""},
		{"no EK", nil, ak.Name, secret, c + "no EK public area"},
		{"EK is a signing key", ak, ak.Name, secret, c + "EK is not a restricted decryption key"},
		{"EK is not restricted", func() *verify.Public {
			a := withKey(tpm2.ECCEKTemplate, &eccKeys()[0].PublicKey)
			a.ObjectAttributes.Restricted = false
			return mustParse(t, a)
		}(), ak.Name, secret, c + "EK is not a restricted decryption key"},
		{"EK without AES", mustParse(t, noAES), ak.Name, secret, c + "EK symmetric algorithm is NULL, want AES-CFB"},
		{"empty name", ek, nil, secret, c + "AK name is malformed: too short"},
		{"name of a handle", ek, []byte{0x40, 0, 0, 1}, secret, c + "AK name is malformed: name algorithm is algorithm 0x4000, want SHA-256 or stronger"},
		{"sha1 name", ek, sha1Name, secret, c + "AK name is malformed: name algorithm is SHA-1, want SHA-256 or stronger"},
		{"short digest", ek, ak.Name[:33], secret, c + "AK name is malformed: digest length does not match its name algorithm"},
		{"long digest", ek, append(append([]byte(nil), ak.Name...), 0), secret, c + "AK name is malformed: digest length does not match its name algorithm"},
		{"short secret", ek, ak.Name, secret[:15], c + "secret has 15 bytes, want 16 to 32"},
		{"long secret", ek, ak.Name, append(secret, 0), c + "secret has 33 bytes, want 16 to 32"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, enc, err := verify.MakeCredential(tc.ek, tc.akName, tc.secret)
			wantErr(t, err, tc.err)
			if err == nil && (len(id) == 0 || len(enc) == 0) {
				t.Error("empty challenge")
			}
			if err != nil && (id != nil || enc != nil) {
				t.Error("challenge returned with an error")
			}
		})
	}
}
