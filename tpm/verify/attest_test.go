package verify_test

import (
	"bytes"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/plinth-id/plinth/tpm/verify"
)

// Banks, for short.
const (
	sha1Bank   = tpm2.TPMAlgSHA1
	sha256Bank = tpm2.TPMAlgSHA256
	sha384Bank = tpm2.TPMAlgSHA384
)

// bootPCRs is the usual ask: PCRs 0-7 in the SHA-1 and SHA-256 banks.
func bootPCRs() verify.PCRSelection {
	return verify.PCRSelection{sha1Bank: {0, 1, 2, 3, 4, 5, 6, 7}, sha256Bank: {7, 6, 5, 4, 3, 2, 1, 0}}
}

func TestVerifyQuote(t *testing.T) {
	nonce := bytes.Repeat([]byte{0x42}, 32)
	want := bootPCRs()
	vals := pcrValues(want)
	banks := []tpm2.TPMAlgID{sha1Bank, sha256Bank}

	for name, ak := range map[string]*softAK{"ecc": newECCAK(t, 0), "rsa": newRSAAK(t, 0)} {
		t.Run(name, func(t *testing.T) {
			attest := tpm2.Marshal(quoteOf(nonce, banks, want, vals))
			if err := verify.VerifyQuote(ak.pub, attest, ak.sign(t, attest), nonce, want, vals); err != nil {
				t.Fatal(err)
			}
			// The TPM lists banks in the order it was asked; any order is fine.
			rev := []tpm2.TPMAlgID{sha256Bank, sha1Bank}
			attest = tpm2.Marshal(quoteOf(nonce, rev, want, vals))
			if err := verify.VerifyQuote(ak.pub, attest, ak.sign(t, attest), nonce, want, vals); err != nil {
				t.Fatalf("banks in another order: %v", err)
			}
		})
	}
}

func TestVerifyQuoteRejects(t *testing.T) {
	ak, other := newECCAK(t, 0), newECCAK(t, 1)
	rsaAK := newRSAAK(t, 0)
	nonce := bytes.Repeat([]byte{0x42}, 32)
	want := bootPCRs()
	vals := pcrValues(want)
	banks := []tpm2.TPMAlgID{sha1Bank, sha256Bank}
	good := quoteOf(nonce, banks, want, vals)

	// edit returns the good quote changed by f.
	edit := func(f func(*tpm2.TPMSAttest, *tpm2.TPMSQuoteInfo)) []byte {
		a := quoteOf(nonce, banks, want, vals)
		q, _ := a.Attested.Quote()
		f(&a, q)
		return tpm2.Marshal(a)
	}
	// quoteOver quotes another selection, with a correct digest for it.
	quoteOver := func(banks []tpm2.TPMAlgID, sel verify.PCRSelection) []byte {
		return tpm2.Marshal(quoteOf(nonce, banks, sel, pcrValues(sel)))
	}
	withVals := func(f func(verify.PCRValues)) verify.PCRValues {
		v := pcrValues(want)
		f(v)
		return v
	}
	goodBytes := tpm2.Marshal(good)
	notRestricted := withKey(akTemplateECC(), &eccKeys()[0].PublicKey)
	notRestricted.ObjectAttributes.Restricted = false

	const q = "verify: quote: "
	for _, tc := range []struct {
		name   string
		ak     *softAK
		akPub  *verify.Public // instead of ak.pub
		attest []byte
		sig    []byte // instead of ak's signature of attest
		nonce  []byte
		want   verify.PCRSelection
		vals   verify.PCRValues
		err    string
	}{
		{name: "good", attest: goodBytes},
		{name: "wrong magic", attest: edit(func(a *tpm2.TPMSAttest, _ *tpm2.TPMSQuoteInfo) { a.Magic = 0xff544348 }),
			err: q + "magic is 0xff544348, not TPM_GENERATED: the TPM did not produce this attestation"},
		{name: "certify, not quote", attest: tpm2.Marshal(certifyOf(nonce, ak.pub.Name)),
			err: q + "attestation type is certify, want quote"},
		{name: "old nonce", attest: goodBytes, nonce: bytes.Repeat([]byte{0x41}, 32),
			err: q + "nonce does not match the challenge"},
		{name: "nonce prefix", attest: goodBytes, nonce: nonce[:16],
			err: q + "nonce does not match the challenge"},
		{name: "no nonce", attest: goodBytes, nonce: []byte{},
			err: q + "no challenge nonce given"},
		{name: "missing bank", attest: quoteOver([]tpm2.TPMAlgID{sha256Bank}, verify.PCRSelection{sha256Bank: want[sha256Bank]}),
			err: q + "quote does not cover bank SHA-1"},
		{name: "missing PCR", attest: quoteOver(banks, verify.PCRSelection{sha1Bank: want[sha1Bank], sha256Bank: {0, 1, 2, 3, 4, 5, 6}}),
			err: q + "quote does not cover PCR 7 in bank SHA-256"},
		{name: "extra PCR", attest: quoteOver(banks, verify.PCRSelection{sha1Bank: {0, 1, 2, 3, 4, 5, 6, 7, 8}, sha256Bank: want[sha256Bank]}),
			err: q + "quote covers PCR 8 in bank SHA-1, which was not asked for"},
		{name: "extra bank", attest: quoteOver([]tpm2.TPMAlgID{sha1Bank, sha256Bank, sha384Bank}, verify.PCRSelection{sha1Bank: want[sha1Bank], sha256Bank: want[sha256Bank], sha384Bank: {0}}),
			err: q + "quote covers bank SHA-384, which was not asked for"},
		{name: "bank twice", attest: edit(func(_ *tpm2.TPMSAttest, qi *tpm2.TPMSQuoteInfo) {
			qi.PCRSelect.PCRSelections = append(qi.PCRSelect.PCRSelections, tpm2.TPMSPCRSelection{Hash: sha1Bank, PCRSelect: []byte{0, 0, 0}})
		}), err: q + "quoted selection lists bank SHA-1 twice"},
		{name: "PCR 24 in a long bitmap", attest: edit(func(_ *tpm2.TPMSAttest, qi *tpm2.TPMSQuoteInfo) {
			qi.PCRSelect.PCRSelections[0].PCRSelect = []byte{0xff, 0, 0, 1}
		}), err: q + "quote covers PCR 24 in bank SHA-1, which was not asked for"},
		{name: "wrong digest", attest: edit(func(_ *tpm2.TPMSAttest, qi *tpm2.TPMSQuoteInfo) { qi.PCRDigest.Buffer[0] ^= 1 }),
			err: q + "PCR digest does not match the reported PCR values"},
		{name: "reported value differs", attest: goodBytes, vals: withVals(func(v verify.PCRValues) { v[sha256Bank][7] = bytes.Repeat([]byte{9}, 32) }),
			err: q + "PCR digest does not match the reported PCR values"},
		{name: "reported values swapped", attest: goodBytes, vals: withVals(func(v verify.PCRValues) { v[sha256Bank][6], v[sha256Bank][7] = v[sha256Bank][7], v[sha256Bank][6] }),
			err: q + "PCR digest does not match the reported PCR values"},
		{name: "reported value missing", attest: goodBytes, vals: withVals(func(v verify.PCRValues) { delete(v[sha1Bank], 3) }),
			err: q + "PCR values lack PCR 3 in bank SHA-1"},
		{name: "reported bank missing", attest: goodBytes, vals: withVals(func(v verify.PCRValues) { delete(v, sha1Bank) }),
			err: q + "PCR values lack PCR 0 in bank SHA-1"},
		{name: "reported value too short", attest: goodBytes, vals: withVals(func(v verify.PCRValues) { v[sha256Bank][2] = v[sha256Bank][2][:20] }),
			err: q + "PCR 2 in bank SHA-256 has 20 bytes, want 32"},
		{name: "extra reported value", attest: goodBytes, vals: withVals(func(v verify.PCRValues) { v[sha256Bank][9] = make([]byte, 32) }),
			err: q + "PCR values include PCR 9 in bank SHA-256, which the quote does not cover"},
		{name: "extra reported bank", attest: goodBytes, vals: withVals(func(v verify.PCRValues) { v[sha384Bank] = map[int][]byte{0: make([]byte, 48)} }),
			err: q + "PCR values include PCR 0 in bank SHA-384, which the quote does not cover"},
		{name: "signed by another AK", attest: goodBytes, sig: other.sign(t, goodBytes),
			err: q + "signature does not verify with the AK"},
		{name: "signature of other bytes", attest: goodBytes, sig: ak.sign(t, edit(func(a *tpm2.TPMSAttest, _ *tpm2.TPMSQuoteInfo) { a.ClockInfo.Clock++ })),
			err: q + "signature does not verify with the AK"},
		{name: "RSA signature for an ECC AK", attest: goodBytes, sig: rsaAK.sign(t, goodBytes),
			err: q + "signature algorithm is RSASSA, the AK signs with ECDSA"},
		{name: "ECC signature for an RSA AK", ak: rsaAK, attest: goodBytes, sig: ak.sign(t, goodBytes),
			err: q + "signature algorithm is ECDSA, the AK signs with RSASSA"},
		{name: "signature hash", attest: goodBytes, sig: func() []byte {
			s, _ := tpm2.Unmarshal[tpm2.TPMTSignature](ak.sign(t, goodBytes))
			e, _ := s.Signature.ECDSA()
			e.Hash = sha1Bank
			return tpm2.Marshal(*s)
		}(), err: q + "signature hash is SHA-1, the AK signs with SHA-256"},
		{name: "null signature", attest: goodBytes, sig: tpm2.Marshal(tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgNull}),
			err: q + "signature algorithm is NULL, the AK signs with ECDSA"},
		{name: "truncated signature", attest: goodBytes, sig: ak.sign(t, goodBytes)[:20],
			err: q + "signature is malformed"},
		{name: "empty signature", attest: goodBytes, sig: []byte{},
			err: q + "signature is malformed"},
		{name: "signature with trailing bytes", attest: goodBytes, sig: append(ak.sign(t, goodBytes), 0),
			err: q + "signature has trailing bytes"},
		{name: "signed truncated attestation", attest: goodBytes[:len(goodBytes)-3],
			err: q + "attestation is malformed"},
		{name: "signed attestation with trailing bytes", attest: append(append([]byte(nil), goodBytes...), 1, 2, 3),
			err: q + "attestation has trailing bytes"},
		{name: "signed non-canonical attestation", attest: func() []byte {
			b := bytes.Clone(goodBytes)
			// magic, type, signer name, nonce, clock, resetCount, restartCount
			safe := 4 + 2 + (2 + 34) + (2 + 32) + 8 + 4 + 4
			b[safe] = 0xee // "yes", but not the way a TPM writes it
			return b
		}(), err: q + "attestation is not in canonical form"},
		{name: "signed garbage", attest: bytes.Repeat([]byte{0xff}, 100),
			err: q + "attestation is malformed"},
		{name: "unsigned garbage", attest: []byte("garbage"), sig: []byte("garbage!"),
			err: q + "signature is malformed"},
		{name: "AK not restricted", attest: goodBytes, akPub: mustParse(t, notRestricted),
			err: "verify: ak: not a restricted signing key"},
		{name: "ask for nothing", attest: goodBytes, want: verify.PCRSelection{},
			err: q + "the PCR selection asked for is invalid: it is empty"},
		{name: "ask for a bank without PCRs", attest: goodBytes, want: verify.PCRSelection{sha1Bank: want[sha1Bank], sha256Bank: nil},
			err: q + "the PCR selection asked for is invalid: bank SHA-256 lists no PCRs"},
		{name: "ask for PCR 24", attest: goodBytes, want: verify.PCRSelection{sha1Bank: {24}},
			err: q + "the PCR selection asked for is invalid: PCR 24 in bank SHA-1 is out of range 0-23"},
		{name: "ask twice", attest: goodBytes, want: verify.PCRSelection{sha1Bank: {1, 1}},
			err: q + "the PCR selection asked for is invalid: PCR 1 in bank SHA-1 is listed twice"},
		{name: "ask an unknown bank", attest: goodBytes, want: verify.PCRSelection{tpm2.TPMAlgSM3256: {1}},
			err: q + "the PCR selection asked for is invalid: unsupported bank SM3-256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := ak
			if tc.ak != nil {
				a = tc.ak
			}
			pub := a.pub
			if tc.akPub != nil {
				pub = tc.akPub
			}
			sig := tc.sig
			if sig == nil {
				sig = a.sign(t, tc.attest)
			}
			n := nonce
			if tc.nonce != nil {
				n = tc.nonce
			}
			w := want
			if tc.want != nil {
				w = tc.want
			}
			v := vals
			if tc.vals != nil {
				v = tc.vals
			}
			wantErr(t, verify.VerifyQuote(pub, tc.attest, sig, n, w, v), tc.err)
		})
	}
}

func TestVerifyCertify(t *testing.T) {
	ak, other := newECCAK(t, 0), newECCAK(t, 1)
	key := mustParse(t, withKey(agentKeyTemplate(), &eccKeys()[2].PublicKey))
	otherKey := mustParse(t, withKey(agentKeyTemplate(), &eccKeys()[3].PublicKey))
	nonce := bytes.Repeat([]byte{7}, 32)
	good := tpm2.Marshal(certifyOf(nonce, key.Name))
	badMagic := certifyOf(nonce, key.Name)
	badMagic.Magic = 0
	// The same key under other attributes has another Name.
	weaker := withKey(agentKeyTemplate(), &eccKeys()[2].PublicKey)
	weaker.ObjectAttributes.FixedTPM = false

	const c = "verify: certify: "
	for _, tc := range []struct {
		name   string
		attest []byte
		sig    []byte
		nonce  []byte
		key    *verify.Public
		err    string
	}{
		{name: "good", attest: good},
		{name: "rsa ak", attest: good, sig: newRSAAK(t, 0).sign(t, good), err: c + "signature algorithm is RSASSA, the AK signs with ECDSA"},
		{name: "another key", attest: good, key: otherKey, err: c + "certified key is not the presented agent key"},
		{name: "same key, other attributes", attest: good, key: mustParse(t, weaker), err: c + "certified key is not the presented agent key"},
		{name: "the AK itself", attest: tpm2.Marshal(certifyOf(nonce, ak.pub.Name)), err: c + "certified key is not the presented agent key"},
		{name: "no key", attest: good, key: (*verify.Public)(nil), err: c + "no certified key given"},
		{name: "wrong nonce", attest: good, nonce: []byte{1}, err: c + "nonce does not match the challenge"},
		{name: "quote, not certify", attest: tpm2.Marshal(quoteOf(nonce, []tpm2.TPMAlgID{sha256Bank}, verify.PCRSelection{sha256Bank: {0}}, pcrValues(verify.PCRSelection{sha256Bank: {0}}))),
			err: c + "attestation type is quote, want certify"},
		{name: "wrong magic", attest: tpm2.Marshal(badMagic), err: c + "magic is 0x00000000, not TPM_GENERATED: the TPM did not produce this attestation"},
		{name: "signed by another AK", attest: good, sig: other.sign(t, good), err: c + "signature does not verify with the AK"},
		{name: "truncated", attest: good[:10], err: c + "attestation is malformed"},
		{name: "trailing", attest: append(append([]byte(nil), good...), 0), err: c + "attestation has trailing bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sig := tc.sig
			if sig == nil {
				sig = ak.sign(t, tc.attest)
			}
			n := nonce
			if tc.nonce != nil {
				n = tc.nonce
			}
			k := key
			if tc.key != nil || tc.name == "no key" {
				k = tc.key
			}
			wantErr(t, verify.VerifyCertify(ak.pub, tc.attest, sig, n, k), tc.err)
		})
	}
}
