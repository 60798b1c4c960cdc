package verify

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/subtle"
	"fmt"
	"math/big"
	"slices"

	"github.com/google/go-tpm/tpm2"
)

// VerifyQuote checks a TPM2_Quote: attest is the TPMS_ATTEST the TPM signed
// (TPM2B_ATTEST contents, no size prefix), sig its TPMT_SIGNATURE, nonce
// the server's fresh challenge, want the PCRs the server asked for and pcrs
// the values the agent reports for them.
//
// In order: ak passes CheckAK (a quote from a key that is not restricted
// proves nothing); sig is the AK's scheme (ECDSA r,s or RSASSA, with the
// AK's scheme hash) and verifies over attest; attest starts with
// TPM_GENERATED and is a quote; its extraData equals nonce (compared in
// constant time); the quoted selection is exactly want, every bank and PCR
// asked for and nothing else; pcrs holds exactly one value of the bank's
// digest size for every quoted PCR and no others; and the quote's PCR
// digest is the AK scheme hash of those values concatenated in the order
// the quote lists them (banks as listed, PCRs ascending).
//
// On success the values in pcrs are the ones the TPM measured when it
// signed. Whether nonce is fresh and unused is the caller's to ensure.
func VerifyQuote(ak *Public, attest, sig, nonce []byte, want PCRSelection, pcrs PCRValues) error {
	const check = "quote"
	att, hash, err := verifyAttest(check, ak, attest, sig, nonce, tpm2.TPMSTAttestQuote)
	if err != nil {
		return err
	}
	qi, err := att.Attested.Quote()
	if err != nil {
		return fail(check, "attestation holds no quote information")
	}
	wanted, err := want.pairs()
	if err != nil {
		return fail(check, "the PCR selection asked for is invalid: %s", err)
	}
	quoted := make(map[pcrID]bool)
	var order []pcrID
	banks := make(map[tpm2.TPMAlgID]bool)
	for _, s := range qi.PCRSelect.PCRSelections {
		if banks[s.Hash] {
			return fail(check, "quoted selection lists bank %s twice", algName(s.Hash))
		}
		banks[s.Hash] = true
		for i, b := range s.PCRSelect {
			for j := range 8 {
				if b&(1<<j) == 0 {
					continue
				}
				id := pcrID{s.Hash, 8*i + j}
				if !wanted[id] {
					if !want.hasBank(s.Hash) {
						return fail(check, "quote covers bank %s, which was not asked for", algName(s.Hash))
					}
					return fail(check, "quote covers PCR %d in bank %s, which was not asked for", id.index, algName(s.Hash))
				}
				quoted[id] = true
				order = append(order, id)
			}
		}
	}
	for _, id := range sortedPairs(wanted) {
		if quoted[id] {
			continue
		}
		if !banks[id.bank] {
			return fail(check, "quote does not cover bank %s", algName(id.bank))
		}
		return fail(check, "quote does not cover PCR %d in bank %s", id.index, algName(id.bank))
	}

	d := hash.New()
	for _, id := range order {
		v, ok := pcrs[id.bank][id.index]
		if !ok {
			return fail(check, "PCR values lack PCR %d in bank %s", id.index, algName(id.bank))
		}
		h, _ := id.bank.Hash() // pairs() admitted only banks with a known hash
		if len(v) != h.Size() {
			return fail(check, "PCR %d in bank %s has %d bytes, want %d", id.index, algName(id.bank), len(v), h.Size())
		}
		d.Write(v)
	}
	for _, bank := range sortedBanks(pcrs) {
		idx := make([]int, 0, len(pcrs[bank]))
		for i := range pcrs[bank] {
			idx = append(idx, i)
		}
		slices.Sort(idx)
		for _, i := range idx {
			if !quoted[pcrID{bank, i}] {
				return fail(check, "PCR values include PCR %d in bank %s, which the quote does not cover", i, algName(bank))
			}
		}
	}
	if !bytes.Equal(d.Sum(nil), qi.PCRDigest.Buffer) {
		return fail(check, "PCR digest does not match the reported PCR values")
	}
	return nil
}

// VerifyCertify checks a TPM2_Certify of key by ak: attest is the signed
// TPMS_ATTEST, sig its TPMT_SIGNATURE and nonce the server's challenge.
// ak must pass CheckAK and sign attest with its scheme; attest must start
// with TPM_GENERATED, be a certification, carry nonce as extraData and
// certify exactly key's Name. Since a Name is a digest of the whole public
// area, success means every attribute of key is the TPM's statement; the
// caller then applies CheckAgentKey (or its own policy) to key.
func VerifyCertify(ak *Public, attest, sig, nonce []byte, key *Public) error {
	const check = "certify"
	if key == nil {
		return fail(check, "no certified key given")
	}
	att, _, err := verifyAttest(check, ak, attest, sig, nonce, tpm2.TPMSTAttestCertify)
	if err != nil {
		return err
	}
	ci, err := att.Attested.Certify()
	if err != nil {
		return fail(check, "attestation holds no certification information")
	}
	if !bytes.Equal(ci.Name.Buffer, key.Name) {
		return fail(check, "certified key is not the presented agent key")
	}
	return nil
}

// verifyAttest runs the checks a quote and a certification share and
// returns the parsed attestation and the AK's scheme hash.
func verifyAttest(check string, ak *Public, attest, sig, nonce []byte, typ tpm2.TPMST) (*tpm2.TPMSAttest, crypto.Hash, error) {
	if err := CheckAK(ak); err != nil {
		return nil, 0, err
	}
	if len(nonce) == 0 {
		return nil, 0, fail(check, "no challenge nonce given")
	}
	hash, err := verifySignature(ak, attest, sig)
	if err != nil {
		return nil, 0, fail(check, "%s", err)
	}
	att, err := unmarshalStrict[tpm2.TPMSAttest](attest, "attestation")
	if err != nil {
		return nil, 0, fail(check, "%s", err)
	}
	if att.Magic != tpm2.TPMGeneratedValue {
		return nil, 0, fail(check, "magic is 0x%08x, not TPM_GENERATED: the TPM did not produce this attestation", uint32(att.Magic))
	}
	if att.Type != typ {
		return nil, 0, fail(check, "attestation type is %s, want %s", attestTypeName(att.Type), attestTypeName(typ))
	}
	if subtle.ConstantTimeCompare(att.ExtraData.Buffer, nonce) != 1 {
		return nil, 0, fail(check, "nonce does not match the challenge")
	}
	return att, hash, nil
}

// verifySignature checks that sig (a TPMT_SIGNATURE) is ak's signature of
// msg under ak's scheme, and returns the scheme's hash. CheckAK has
// already limited ak to ECDSA-SHA256 and RSASSA-SHA256.
func verifySignature(ak *Public, msg, sig []byte) (crypto.Hash, error) {
	s, err := unmarshalStrict[tpm2.TPMTSignature](sig, "signature")
	if err != nil {
		return 0, err
	}
	scheme, hashAlg, _ := signingScheme(&ak.Area)
	if s.SigAlg != scheme {
		return 0, fmt.Errorf("signature algorithm is %s, the AK signs with %s", algName(s.SigAlg), algName(scheme))
	}
	hash, err := hashAlg.Hash()
	if err != nil {
		return 0, fmt.Errorf("the AK's scheme hash %s is not supported", algName(hashAlg))
	}
	var sigHash tpm2.TPMAlgID
	ok := false
	switch k := ak.Key.(type) {
	case *ecdsa.PublicKey:
		e, err := s.Signature.ECDSA()
		if err != nil {
			return 0, fmt.Errorf("signature is malformed")
		}
		sigHash = e.Hash
		if sigHash == hashAlg {
			d := hash.New()
			d.Write(msg)
			r := new(big.Int).SetBytes(e.SignatureR.Buffer)
			s := new(big.Int).SetBytes(e.SignatureS.Buffer)
			ok = ecdsa.Verify(k, d.Sum(nil), r, s)
		}
	case *rsa.PublicKey:
		r, err := s.Signature.RSASSA()
		if err != nil {
			return 0, fmt.Errorf("signature is malformed")
		}
		sigHash = r.Hash
		if sigHash == hashAlg {
			d := hash.New()
			d.Write(msg)
			ok = rsa.VerifyPKCS1v15(k, hash, d.Sum(nil), r.Sig.Buffer) == nil
		}
	}
	if sigHash != hashAlg {
		return 0, fmt.Errorf("signature hash is %s, the AK signs with %s", algName(sigHash), algName(hashAlg))
	}
	if !ok {
		return 0, fmt.Errorf("signature does not verify with the AK")
	}
	return hash, nil
}

// pcrID is one PCR of one bank.
type pcrID struct {
	bank  tpm2.TPMAlgID
	index int
}

// maxPCR is the highest PCR index of a PC Client TPM.
const maxPCR = 23

// pairs validates s and returns its PCRs as a set.
func (s PCRSelection) pairs() (map[pcrID]bool, error) {
	if len(s) == 0 {
		return nil, reason("it is empty")
	}
	out := make(map[pcrID]bool)
	for bank, idx := range s {
		switch bank {
		case tpm2.TPMAlgSHA1, tpm2.TPMAlgSHA256, tpm2.TPMAlgSHA384, tpm2.TPMAlgSHA512:
		default:
			return nil, reason("unsupported bank " + algName(bank))
		}
		if len(idx) == 0 {
			return nil, reason("bank " + algName(bank) + " lists no PCRs")
		}
		for _, i := range idx {
			if i < 0 || i > maxPCR {
				return nil, fmt.Errorf("PCR %d in bank %s is out of range 0-%d", i, algName(bank), maxPCR)
			}
			if out[pcrID{bank, i}] {
				return nil, fmt.Errorf("PCR %d in bank %s is listed twice", i, algName(bank))
			}
			out[pcrID{bank, i}] = true
		}
	}
	return out, nil
}

func (s PCRSelection) hasBank(b tpm2.TPMAlgID) bool {
	_, ok := s[b]
	return ok
}

// sortedPairs orders PCRs by bank algorithm, then index, so that errors
// name the same PCR every time.
func sortedPairs(m map[pcrID]bool) []pcrID {
	out := make([]pcrID, 0, len(m))
	for id := range m {
		out = append(out, id)
	}
	slices.SortFunc(out, func(a, b pcrID) int {
		if a.bank != b.bank {
			return int(a.bank) - int(b.bank)
		}
		return a.index - b.index
	})
	return out
}

func sortedBanks(v PCRValues) []tpm2.TPMAlgID {
	out := make([]tpm2.TPMAlgID, 0, len(v))
	for b := range v {
		out = append(out, b)
	}
	slices.Sort(out)
	return out
}
