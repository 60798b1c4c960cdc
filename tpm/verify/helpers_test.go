package verify_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"slices"
	"sync"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/plinth-id/plinth/tpm/verify"
)

// The tests stand in for a TPM with software keys: a TPMT_PUBLIC is built
// around a Go key, and TPMS_ATTEST structures are marshalled and signed in
// Go. That lets every field be wrong on purpose. verify_sim_test.go checks
// the same functions against a real (simulated) TPM.

// akTemplateECC is the AK template the device package uses: a restricted
// ECDSA-SHA256 signing key on P-256 born in the TPM.
func akTemplateECC() tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgECC,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true,
			UserWithAuth: true, Restricted: true, SignEncrypt: true},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme: tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDSA, Details: tpm2.NewTPMUAsymScheme(
				tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256})},
			CurveID: tpm2.TPMECCNistP256,
			KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
		}),
	}
}

// akTemplateRSA is the RSA-2048 RSASSA-SHA256 AK template.
func akTemplateRSA() tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgRSA,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true,
			UserWithAuth: true, Restricted: true, SignEncrypt: true},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme: tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgRSASSA, Details: tpm2.NewTPMUAsymScheme(
				tpm2.TPMAlgRSASSA, &tpm2.TPMSSigSchemeRSASSA{HashAlg: tpm2.TPMAlgSHA256})},
			KeyBits: 2048,
		}),
	}
}

// agentKeyTemplate is the TPM-resident agent key: unrestricted, P-256,
// NULL scheme.
func agentKeyTemplate() tpm2.TPMTPublic {
	t := akTemplateECC()
	t.ObjectAttributes.Restricted = false
	t.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
		Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
		Scheme:    tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull},
		CurveID:   tpm2.TPMECCNistP256,
		KDF:       tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
	})
	return t
}

// withKey fills in the unique field of an ECC or RSA template with pub
// (and the curve), in a deep copy of t: go-tpm's templates are package
// variables whose unions hold pointers.
func withKey(t tpm2.TPMTPublic, pub crypto.PublicKey) tpm2.TPMTPublic {
	cp, err := tpm2.Unmarshal[tpm2.TPMTPublic](tpm2.Marshal(t))
	if err != nil {
		panic(err)
	}
	t = *cp
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		size := (k.Curve.Params().BitSize + 7) / 8
		if p, err := t.Parameters.ECCDetail(); err == nil {
			p.CurveID = map[int]tpm2.TPMECCCurve{256: tpm2.TPMECCNistP256, 384: tpm2.TPMECCNistP384}[k.Curve.Params().BitSize]
		}
		t.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: k.X.FillBytes(make([]byte, size))},
			Y: tpm2.TPM2BECCParameter{Buffer: k.Y.FillBytes(make([]byte, size))},
		})
	case *rsa.PublicKey:
		t.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: k.N.Bytes()})
	}
	return t
}

func mustParse(t testing.TB, area tpm2.TPMTPublic) *verify.Public {
	t.Helper()
	p, err := verify.ParsePublic(tpm2.Marshal(area))
	if err != nil {
		t.Fatalf("ParsePublic: %v", err)
	}
	return p
}

// Keys are slow to make (RSA) and the tests need only a few: make each once.
var (
	eccKeys = sync.OnceValue(func() []*ecdsa.PrivateKey {
		var ks []*ecdsa.PrivateKey
		for range 4 {
			k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			ks = append(ks, k)
		}
		return ks
	})
	rsaKeys = sync.OnceValue(func() []*rsa.PrivateKey {
		var ks []*rsa.PrivateKey
		for range 2 {
			k, _ := rsa.GenerateKey(rand.Reader, 2048)
			ks = append(ks, k)
		}
		return ks
	})
	p384Key = sync.OnceValue(func() *ecdsa.PrivateKey {
		k, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		return k
	})
)

// softAK is a software attestation key: its Public, and a signer that
// produces TPMT_SIGNATUREs the way a TPM does.
type softAK struct {
	pub  *verify.Public
	priv crypto.Signer
}

func newECCAK(t testing.TB, i int) *softAK {
	k := eccKeys()[i]
	return &softAK{pub: mustParse(t, withKey(akTemplateECC(), &k.PublicKey)), priv: k}
}

func newRSAAK(t testing.TB, i int) *softAK {
	k := rsaKeys()[i]
	return &softAK{pub: mustParse(t, withKey(akTemplateRSA(), &k.PublicKey)), priv: k}
}

// sign returns the TPMT_SIGNATURE of msg, SHA-256 hashed.
func (a *softAK) sign(t testing.TB, msg []byte) []byte {
	t.Helper()
	d := sha256.Sum256(msg)
	switch k := a.priv.(type) {
	case *ecdsa.PrivateKey:
		r, s, err := ecdsa.Sign(rand.Reader, k, d[:])
		if err != nil {
			t.Fatal(err)
		}
		return tpm2.Marshal(tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgECDSA,
			Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA, &tpm2.TPMSSignatureECC{
				Hash:       tpm2.TPMAlgSHA256,
				SignatureR: tpm2.TPM2BECCParameter{Buffer: r.FillBytes(make([]byte, 32))},
				SignatureS: tpm2.TPM2BECCParameter{Buffer: s.FillBytes(make([]byte, 32))},
			})})
	case *rsa.PrivateKey:
		sig, err := rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, d[:])
		if err != nil {
			t.Fatal(err)
		}
		return tpm2.Marshal(tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgRSASSA,
			Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgRSASSA, &tpm2.TPMSSignatureRSA{
				Hash: tpm2.TPMAlgSHA256, Sig: tpm2.TPM2BPublicKeyRSA{Buffer: sig}})})
	}
	t.Fatal("unknown key")
	return nil
}

// pcrValues returns deterministic, distinct values for the PCRs of sel.
func pcrValues(sel verify.PCRSelection) verify.PCRValues {
	out := verify.PCRValues{}
	for bank, idx := range sel {
		h, _ := bank.Hash()
		out[bank] = map[int][]byte{}
		for _, i := range idx {
			out[bank][i] = bytes.Repeat([]byte{byte(i + 1)}, h.Size())
		}
	}
	return out
}

// tpmlSelection is the TPML_PCR_SELECTION a TPM reports for sel, banks in
// the order given.
func tpmlSelection(banks []tpm2.TPMAlgID, sel verify.PCRSelection) tpm2.TPMLPCRSelection {
	var l tpm2.TPMLPCRSelection
	for _, b := range banks {
		bitmap := make([]byte, 3)
		for _, i := range sel[b] {
			bitmap[i/8] |= 1 << (i % 8)
		}
		l.PCRSelections = append(l.PCRSelections, tpm2.TPMSPCRSelection{Hash: b, PCRSelect: bitmap})
	}
	return l
}

// pcrDigest is what the TPM puts in a quote: SHA-256 of the values, banks
// in order, PCRs ascending.
func pcrDigest(banks []tpm2.TPMAlgID, sel verify.PCRSelection, vals verify.PCRValues) []byte {
	d := sha256.New()
	for _, b := range banks {
		idx := slices.Sorted(slices.Values(sel[b]))
		for _, i := range idx {
			d.Write(vals[b][i])
		}
	}
	return d.Sum(nil)
}

func attestation(typ tpm2.TPMST, nonce []byte, info tpm2.TPMUAttest) tpm2.TPMSAttest {
	return tpm2.TPMSAttest{
		Magic:           tpm2.TPMGeneratedValue,
		Type:            typ,
		QualifiedSigner: tpm2.TPM2BName{Buffer: bytes.Repeat([]byte{0xaa}, 34)},
		ExtraData:       tpm2.TPM2BData{Buffer: nonce},
		ClockInfo:       tpm2.TPMSClockInfo{Clock: 1234, ResetCount: 1, Safe: true},
		FirmwareVersion: 0x2001_0001,
		Attested:        info,
	}
}

// quoteOf builds the TPMS_ATTEST of a quote over sel (banks in order)
// with vals.
func quoteOf(nonce []byte, banks []tpm2.TPMAlgID, sel verify.PCRSelection, vals verify.PCRValues) tpm2.TPMSAttest {
	return attestation(tpm2.TPMSTAttestQuote, nonce, tpm2.NewTPMUAttest(tpm2.TPMSTAttestQuote, &tpm2.TPMSQuoteInfo{
		PCRSelect: tpmlSelection(banks, sel),
		PCRDigest: tpm2.TPM2BDigest{Buffer: pcrDigest(banks, sel, vals)},
	}))
}

func certifyOf(nonce, name []byte) tpm2.TPMSAttest {
	return attestation(tpm2.TPMSTAttestCertify, nonce, tpm2.NewTPMUAttest(tpm2.TPMSTAttestCertify, &tpm2.TPMSCertifyInfo{
		Name:          tpm2.TPM2BName{Buffer: name},
		QualifiedName: tpm2.TPM2BName{Buffer: name},
	}))
}

// softEK is a software endorsement key built from a standard EK template.
type softEK struct {
	pub  *verify.Public
	priv crypto.PrivateKey
}

func newECCEK(t testing.TB, i int) *softEK {
	k := eccKeys()[i]
	return &softEK{pub: mustParse(t, withKey(tpm2.ECCEKTemplate, &k.PublicKey)), priv: k}
}

func newRSAEK(t testing.TB, i int) *softEK {
	k := rsaKeys()[i]
	return &softEK{pub: mustParse(t, withKey(tpm2.RSAEKTemplate, &k.PublicKey)), priv: k}
}

// tpmECCEKTemplate is swtpm's P-384 EK: SHA-384 name, AES-256-CFB, the
// high-range EK profile (userWithAuth set; the policy here is a stand-in).
func tpmECCEKTemplate() tpm2.TPMTPublic {
	t := withKey(tpm2.ECCEKTemplate, &p384Key().PublicKey)
	t.NameAlg = tpm2.TPMAlgSHA384
	t.ObjectAttributes.UserWithAuth = true
	t.AuthPolicy = tpm2.TPM2BDigest{Buffer: bytes.Repeat([]byte{0xb2}, 48)}
	p, _ := t.Parameters.ECCDetail()
	p.CurveID = tpm2.TPMECCNistP384
	p.Symmetric = tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgAES,
		KeyBits: tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(256)),
		Mode:    tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB)}
	return t
}
