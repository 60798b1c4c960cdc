package verify

import (
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// Error is a failed check: which check, and why. Attestation rejections are
// built from it, so Check and Reason are stable, exact and readable by an
// operator; tests compare them literally.
//
// Check is one of "public area", "ek", "ek ca bundle", "ek certificate",
// "ak", "agent key", "credential", "quote", "certify" and "event log".
type Error struct {
	Check  string
	Reason string
}

// Error returns "verify: " + Check + ": " + Reason.
func (e *Error) Error() string { return "verify: " + e.Check + ": " + e.Reason }

func fail(check, format string, args ...any) *Error {
	return &Error{Check: check, Reason: fmt.Sprintf(format, args...)}
}

// unmarshalStrict parses a TPM structure and refuses bytes that do not come
// back unchanged from marshalling it again: trailing bytes, or any encoding
// that is not the one a TPM produces. go-tpm's reflective parser checks
// neither, and it is run here on bytes an unauthenticated client chose, so a
// panic inside it is turned into an error rather than allowed to take the
// server down.
func unmarshalStrict[T tpm2.Marshallable, P interface {
	*T
	tpm2.Unmarshallable
}](b []byte, what string) (v *T, err error) {
	defer func() {
		if r := recover(); r != nil {
			v, err = nil, fmt.Errorf("%s is malformed", what)
		}
	}()
	v, err = tpm2.Unmarshal[T, P](b)
	if err != nil {
		return nil, fmt.Errorf("%s is malformed", what)
	}
	canon := tpm2.Marshal(*v)
	switch {
	case len(canon) < len(b) && string(canon) == string(b[:len(canon)]):
		return nil, fmt.Errorf("%s has trailing bytes", what)
	case string(canon) != string(b):
		return nil, fmt.Errorf("%s is not in canonical form", what)
	}
	return v, nil
}

// algName is the readable name of the TPM algorithms this package meets.
func algName(a tpm2.TPMAlgID) string {
	switch a {
	case tpm2.TPMAlgNull:
		return "NULL"
	case tpm2.TPMAlgSHA1:
		return "SHA-1"
	case tpm2.TPMAlgSHA256:
		return "SHA-256"
	case tpm2.TPMAlgSHA384:
		return "SHA-384"
	case tpm2.TPMAlgSHA512:
		return "SHA-512"
	case tpm2.TPMAlgSM3256:
		return "SM3-256"
	case tpm2.TPMAlgSHA3256:
		return "SHA3-256"
	case tpm2.TPMAlgSHA3384:
		return "SHA3-384"
	case tpm2.TPMAlgSHA3512:
		return "SHA3-512"
	case tpm2.TPMAlgRSA:
		return "RSA"
	case tpm2.TPMAlgECC:
		return "ECC"
	case tpm2.TPMAlgKeyedHash:
		return "KEYEDHASH"
	case tpm2.TPMAlgSymCipher:
		return "SYMCIPHER"
	case tpm2.TPMAlgRSASSA:
		return "RSASSA"
	case tpm2.TPMAlgRSAPSS:
		return "RSAPSS"
	case tpm2.TPMAlgRSAES:
		return "RSAES"
	case tpm2.TPMAlgOAEP:
		return "OAEP"
	case tpm2.TPMAlgECDSA:
		return "ECDSA"
	case tpm2.TPMAlgECDH:
		return "ECDH"
	case tpm2.TPMAlgECDAA:
		return "ECDAA"
	case tpm2.TPMAlgECSchnorr:
		return "ECSCHNORR"
	case tpm2.TPMAlgHMAC:
		return "HMAC"
	case tpm2.TPMAlgAES:
		return "AES"
	case tpm2.TPMAlgCFB:
		return "CFB"
	}
	return fmt.Sprintf("algorithm 0x%04x", uint16(a))
}

func curveName(c tpm2.TPMECCCurve) string {
	switch c {
	case tpm2.TPMECCNistP256:
		return "NIST P-256"
	case tpm2.TPMECCNistP384:
		return "NIST P-384"
	case tpm2.TPMECCNistP521:
		return "NIST P-521"
	}
	return fmt.Sprintf("curve 0x%04x", uint16(c))
}

func attestTypeName(t tpm2.TPMST) string {
	switch t {
	case tpm2.TPMSTAttestQuote:
		return "quote"
	case tpm2.TPMSTAttestCertify:
		return "certify"
	case tpm2.TPMSTAttestCreation:
		return "creation"
	case tpm2.TPMSTAttestTime:
		return "time"
	case tpm2.TPMSTAttestNV:
		return "nv"
	case tpm2.TPMSTAttestCommandAudit:
		return "command audit"
	case tpm2.TPMSTAttestSessionAudit:
		return "session audit"
	}
	return fmt.Sprintf("0x%04x", uint16(t))
}
