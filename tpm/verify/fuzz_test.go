package verify_test

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/plinth-id/plinth/tpm/verify"
)

// The fuzz targets feed client-chosen bytes to every parser. `go test`
// runs their seeds; `go test -fuzz=FuzzX ./tpm/verify/` explores further.
// None may panic, and none may accept what it should not.

func FuzzParsePublic(f *testing.F) {
	k := eccKeys()[0]
	for _, area := range []tpm2.TPMTPublic{
		withKey(akTemplateECC(), &k.PublicKey),
		withKey(akTemplateRSA(), &rsaKeys()[0].PublicKey),
		withKey(agentKeyTemplate(), &k.PublicKey),
		withKey(tpm2.ECCEKTemplate, &k.PublicKey),
		withKey(tpm2.RSAEKTemplate, &rsaKeys()[0].PublicKey),
		tpmECCEKTemplate(),
	} {
		f.Add(tpm2.Marshal(area))
	}
	f.Add([]byte{})
	f.Add([]byte{0, 0x23, 0, 0x0b})
	secret := bytes.Repeat([]byte{1}, 16)
	akName := newECCAK(f, 0).pub.Name
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := verify.ParsePublic(b)
		if err != nil {
			if p != nil {
				t.Fatal("Public returned with an error")
			}
			return
		}
		if !bytes.Equal(p.Raw, b) || !bytes.Equal(tpm2.Marshal(p.Area), b) {
			t.Fatal("accepted bytes that do not round-trip")
		}
		name, err := tpm2.ObjectName(&p.Area)
		if err != nil || !bytes.Equal(name.Buffer, p.Name) {
			t.Fatalf("Name %x, want %x (%v)", p.Name, name, err)
		}
		if _, err := verify.EKHash(p); err != nil {
			t.Fatalf("EKHash of a parsed key: %v", err)
		}
		_ = verify.CheckAK(p)
		_ = verify.CheckAgentKey(p)
		if p.Area.Type == tpm2.TPMAlgRSA && len(b) > 600 {
			return // RSA-OAEP with a fuzzed multi-kilobyte modulus is only slow
		}
		_, _, _ = verify.MakeCredential(p, akName, secret)
		_, _, _ = verify.MakeCredential(p, p.Name, secret)
	})
}

// quoteFixture is one AK, challenge and PCR set, and a valid quote of it.
type quoteFixture struct {
	ak                  *softAK
	nonce               []byte
	want                verify.PCRSelection
	vals                verify.PCRValues
	attest, sig         []byte
	certAttest, certSig []byte
	key                 *verify.Public
}

func newQuoteFixture(tb testing.TB, ak *softAK) *quoteFixture {
	x := &quoteFixture{ak: ak, nonce: bytes.Repeat([]byte{0x42}, 32), want: bootPCRs()}
	x.vals = pcrValues(x.want)
	x.attest = tpm2.Marshal(quoteOf(x.nonce, []tpm2.TPMAlgID{sha1Bank, sha256Bank}, x.want, x.vals))
	x.sig = ak.sign(tb, x.attest)
	x.key = mustParse(tb, withKey(agentKeyTemplate(), &eccKeys()[2].PublicKey))
	x.certAttest = tpm2.Marshal(certifyOf(x.nonce, x.key.Name))
	x.certSig = ak.sign(tb, x.certAttest)
	return x
}

func FuzzVerifyQuote(f *testing.F) {
	fx := []*quoteFixture{newQuoteFixture(f, newECCAK(f, 0)), newQuoteFixture(f, newRSAAK(f, 0))}
	for i, x := range fx {
		f.Add(x.attest, x.sig, i == 1)
		f.Add(x.attest[:len(x.attest)-1], x.sig, i == 1)
		f.Add(x.certAttest, x.certSig, i == 1)
		f.Add(x.attest, x.sig[:10], i == 1)
	}
	f.Add([]byte{}, []byte{}, false)
	f.Fuzz(func(t *testing.T, attest, sig []byte, rsa bool) {
		x := fx[0]
		if rsa {
			x = fx[1]
		}
		err := verify.VerifyQuote(x.ak.pub, attest, sig, x.nonce, x.want, x.vals)
		if err == nil && !bytes.Equal(attest, x.attest) {
			t.Fatalf("accepted an attestation the AK never signed: %x", attest)
		}
		if err != nil {
			if _, ok := err.(*verify.Error); !ok {
				t.Fatalf("error is a %T", err)
			}
		}
	})
}

func FuzzVerifyCertify(f *testing.F) {
	fx := []*quoteFixture{newQuoteFixture(f, newECCAK(f, 0)), newQuoteFixture(f, newRSAAK(f, 0))}
	for i, x := range fx {
		f.Add(x.certAttest, x.certSig, i == 1)
		f.Add(x.attest, x.sig, i == 1)
		f.Add(append(bytes.Clone(x.certAttest), 0), x.certSig, i == 1)
	}
	f.Fuzz(func(t *testing.T, attest, sig []byte, rsa bool) {
		x := fx[0]
		if rsa {
			x = fx[1]
		}
		err := verify.VerifyCertify(x.ak.pub, attest, sig, x.nonce, x.key)
		if err == nil && !bytes.Equal(attest, x.certAttest) {
			t.Fatalf("accepted an attestation the AK never signed: %x", attest)
		}
	})
}

func FuzzEKCert(f *testing.F) {
	m := newManufacturer(f)
	ek := newECCEK(f, 0).pub
	good := m.inter.issue(f, ekCertTemplate(f, ek.Key), ek.Key)
	f.Add(good)
	uri := ekCertTemplate(f, ek.Key)
	uri.ExtraExtensions[0] = pkix.Extension{Id: oidSAN, Critical: true, Value: sanOf(f, uriName("urn:x"))}
	f.Add(m.inter.issue(f, uri, ek.Key))
	f.Add(m.inter.cert.Raw)
	f.Add(good[:100])
	f.Fuzz(func(t *testing.T, der []byte) {
		cert, err := m.v.Verify(der, ek, now)
		if err == nil {
			if _, err := verify.ParseEKCertInfo(cert); err != nil {
				t.Fatalf("accepted certificate has no readable info: %v", err)
			}
		}
		if c, err := x509.ParseCertificate(der); err == nil {
			_, _ = verify.ParseEKCertInfo(c)
		}
	})
}
