package verify

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"math/big"
	"strconv"
	"strings"

	"github.com/google/go-tpm/tpm2"
)

// Public is a parsed TPMT_PUBLIC: the public area of a TPM key as the TPM
// marshals it (no TPM2B size prefix). Build it with ParsePublic, which
// guarantees that Raw survives an unmarshal/marshal round trip, so Name,
// Area and Key all describe exactly the bytes the client sent.
type Public struct {
	// Raw is the TPMT_PUBLIC as received.
	Raw []byte
	// Area is Raw parsed.
	Area tpm2.TPMTPublic
	// Name is the TPM Name of the key: nameAlg (2 bytes, big endian)
	// followed by the nameAlg digest of Raw. A TPM signs Names in quotes'
	// signers and certifications, and MakeCredential binds to one.
	Name []byte
	// Key is the public key: *rsa.PublicKey or *ecdsa.PublicKey.
	Key crypto.PublicKey
}

// ParsePublic parses a TPMT_PUBLIC. It refuses trailing bytes and
// non-canonical encodings, name algorithms other than SHA-1, SHA-256,
// SHA-384 and SHA-512, key types other than RSA and ECC, RSA keys of other
// than 1024, 2048, 3072 or 4096 bits or whose modulus is not that long, and
// an ECC point that is not on a NIST P-256, P-384 or P-521 curve. It checks
// no attributes: CheckAK and CheckAgentKey do.
func ParsePublic(b []byte) (*Public, error) {
	const check = "public area"
	area, err := unmarshalStrict[tpm2.TPMTPublic](b, "TPMT_PUBLIC")
	if err != nil {
		return nil, &Error{Check: check, Reason: err.Error()}
	}
	h, err := area.NameAlg.Hash()
	if err != nil || area.NameAlg == tpm2.TPMAlgNull {
		return nil, fail(check, "unsupported name algorithm %s", algName(area.NameAlg))
	}
	var key crypto.PublicKey
	switch area.Type {
	case tpm2.TPMAlgRSA:
		key, err = rsaKey(area)
	case tpm2.TPMAlgECC:
		key, err = eccKey(area)
	default:
		return nil, fail(check, "unsupported key type %s: only RSA and ECC keys are accepted", algName(area.Type))
	}
	if err != nil {
		return nil, &Error{Check: check, Reason: err.Error()}
	}
	raw := append([]byte(nil), b...)
	d := h.New()
	d.Write(raw)
	name := binary.BigEndian.AppendUint16(nil, uint16(area.NameAlg))
	return &Public{Raw: raw, Area: *area, Name: d.Sum(name), Key: key}, nil
}

type reason string

func (r reason) Error() string { return string(r) }

func rsaKey(area *tpm2.TPMTPublic) (*rsa.PublicKey, error) {
	parms, err := area.Parameters.RSADetail()
	if err != nil {
		return nil, reason("RSA parameters are missing")
	}
	n, err := area.Unique.RSA()
	if err != nil {
		return nil, reason("RSA modulus is missing")
	}
	bits := int(parms.KeyBits)
	switch bits {
	case 1024, 2048, 3072, 4096: // the sizes TPMs implement
	default:
		return nil, reason("unsupported RSA key size " + strconv.Itoa(bits))
	}
	if len(n.Buffer)*8 != bits || n.Buffer[0]&0x80 == 0 {
		return nil, reason("RSA modulus does not have the declared size")
	}
	e := int(parms.Exponent)
	if parms.Exponent == 0 {
		e = 65537 // the TPM's encoding of the default exponent
	}
	if e < 3 || e%2 == 0 || parms.Exponent > 1<<31-1 {
		return nil, reason("RSA exponent is invalid")
	}
	return &rsa.PublicKey{N: new(big.Int).SetBytes(n.Buffer), E: e}, nil
}

func eccKey(area *tpm2.TPMTPublic) (*ecdsa.PublicKey, error) {
	parms, err := area.Parameters.ECCDetail()
	if err != nil {
		return nil, reason("ECC parameters are missing")
	}
	pt, err := area.Unique.ECC()
	if err != nil {
		return nil, reason("ECC point is missing")
	}
	var c elliptic.Curve
	switch parms.CurveID {
	case tpm2.TPMECCNistP256:
		c = elliptic.P256()
	case tpm2.TPMECCNistP384:
		c = elliptic.P384()
	case tpm2.TPMECCNistP521:
		c = elliptic.P521()
	default:
		return nil, reason("unsupported ECC curve " + curveName(parms.CurveID))
	}
	size := (c.Params().BitSize + 7) / 8
	x, y := pt.X.Buffer, pt.Y.Buffer
	if len(x) > size || len(y) > size {
		return nil, reason("ECC point is not on the curve")
	}
	// Coordinates are big-endian integers; a TPM pads them to the field
	// size, but a shorter encoding is the same number.
	u := make([]byte, 1+2*size)
	u[0] = 4
	copy(u[1+size-len(x):1+size], x)
	copy(u[1+2*size-len(y):], y)
	k, err := ecdsa.ParseUncompressedPublicKey(c, u)
	if err != nil {
		return nil, reason("ECC point is not on the curve")
	}
	return k, nil
}

// EKHash is the identity of a TPM: the lowercase hex SHA-256 of the PKIX
// (SubjectPublicKeyInfo) DER of the EK public key. The agent's SPIFFE ID is
// spiffe://<trust domain>/spire/agent/tpm/<EKHash>, and operators enroll
// TPMs by it. It is the same value whether the EK came as a TPMT_PUBLIC or
// inside its certificate, since it ignores TPM attributes and policy.
func EKHash(ek *Public) (string, error) {
	if ek == nil || ek.Key == nil {
		return "", fail("ek", "no EK public key")
	}
	der, err := x509.MarshalPKIXPublicKey(ek.Key)
	if err != nil {
		return "", fail("ek", "cannot encode the EK public key: %v", err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

// CheckAK checks that ak can be an attestation key: a restricted signing
// key (restricted, sign, not decrypt) created inside a TPM and unable to
// leave it (fixedTPM, fixedParent, sensitiveDataOrigin), with a name
// algorithm of SHA-256 or stronger, no symmetric algorithm, and a scheme of
// ECDSA-SHA256 on NIST P-256 or RSASSA-SHA256 with a modulus of 2048 bits or
// more.
//
// Restricted is what makes quotes and certifications mean anything: a
// restricted key signs only digests the TPM computed itself, so it cannot
// sign a forged TPMS_ATTEST that starts with TPM_GENERATED. These
// attributes are the TPM's own statement, so they are to be trusted only
// once credential activation has shown the AK lives in the same TPM as a
// trusted EK.
func CheckAK(ak *Public) error {
	const check = "ak"
	if ak == nil {
		return fail(check, "no AK public area")
	}
	a := ak.Area.ObjectAttributes
	switch {
	case !a.Restricted || !a.SignEncrypt:
		return fail(check, "not a restricted signing key")
	case a.Decrypt:
		return fail(check, "decrypt is set: an AK must not decrypt")
	case !a.FixedTPM:
		return fail(check, "fixedTPM is not set")
	case !a.FixedParent:
		return fail(check, "fixedParent is not set")
	case !a.SensitiveDataOrigin:
		return fail(check, "sensitiveDataOrigin is not set")
	}
	if err := checkNameAlg(ak); err != nil {
		return fail(check, "%s", err)
	}
	scheme, hash, sym := signingScheme(&ak.Area)
	if sym != tpm2.TPMAlgNull {
		return fail(check, "symmetric algorithm is %s, want NULL", algName(sym))
	}
	ok := false
	switch k := ak.Key.(type) {
	case *ecdsa.PublicKey:
		ok = k.Curve == elliptic.P256() && scheme == tpm2.TPMAlgECDSA && hash == tpm2.TPMAlgSHA256
	case *rsa.PublicKey:
		ok = k.N.BitLen() >= 2048 && scheme == tpm2.TPMAlgRSASSA && hash == tpm2.TPMAlgSHA256
	}
	if !ok {
		return fail(check, "signing scheme is %s, want ECDSA-SHA256 on NIST P-256 or RSASSA-SHA256 with RSA-2048 or larger", schemeName(&ak.Area))
	}
	return nil
}

// CheckAgentKey checks that k can be a TPM-resident agent key: a
// non-restricted signing key (sign, not decrypt, not restricted) created
// inside the TPM and unable to leave it (fixedTPM, fixedParent,
// sensitiveDataOrigin), on NIST P-256, with a NULL or ECDSA-SHA256 scheme
// (TLS 1.3 signs P-256 handshakes with SHA-256), a name algorithm of SHA-256
// or stronger and no symmetric algorithm. The attributes are trusted only
// once VerifyCertify has shown that an AK of the same TPM certified k.
func CheckAgentKey(k *Public) error {
	const check = "agent key"
	if k == nil {
		return fail(check, "no agent key public area")
	}
	a := k.Area.ObjectAttributes
	switch {
	case !a.SignEncrypt:
		return fail(check, "not a signing key")
	case a.Decrypt:
		return fail(check, "decrypt is set: the agent key must only sign")
	case a.Restricted:
		return fail(check, "restricted is set: the agent key must sign arbitrary digests")
	case !a.FixedTPM:
		return fail(check, "fixedTPM is not set")
	case !a.FixedParent:
		return fail(check, "fixedParent is not set")
	case !a.SensitiveDataOrigin:
		return fail(check, "sensitiveDataOrigin is not set")
	}
	if err := checkNameAlg(k); err != nil {
		return fail(check, "%s", err)
	}
	if ek, ok := k.Key.(*ecdsa.PublicKey); !ok || ek.Curve != elliptic.P256() {
		return fail(check, "not an ECC NIST P-256 key")
	}
	scheme, hash, sym := signingScheme(&k.Area)
	if sym != tpm2.TPMAlgNull {
		return fail(check, "symmetric algorithm is %s, want NULL", algName(sym))
	}
	if scheme != tpm2.TPMAlgNull && (scheme != tpm2.TPMAlgECDSA || hash != tpm2.TPMAlgSHA256) {
		return fail(check, "signing scheme is %s, want NULL or ECDSA-SHA256", schemeName(&k.Area))
	}
	return nil
}

// checkNameAlg refuses SHA-1 Names: a Name is what credential activation
// and TPM2_Certify bind to, and it must not be open to collisions.
func checkNameAlg(p *Public) error {
	switch p.Area.NameAlg {
	case tpm2.TPMAlgSHA256, tpm2.TPMAlgSHA384, tpm2.TPMAlgSHA512:
		return nil
	}
	return reason("name algorithm is " + algName(p.Area.NameAlg) + ", want SHA-256 or stronger")
}

// signingScheme returns a key's scheme, the scheme's hash and its
// symmetric algorithm; NULL where absent.
func signingScheme(p *tpm2.TPMTPublic) (scheme, hash, sym tpm2.TPMAlgID) {
	var details *tpm2.TPMUAsymScheme
	if parms, err := p.Parameters.ECCDetail(); p.Type == tpm2.TPMAlgECC && err == nil {
		scheme, sym, details = parms.Scheme.Scheme, parms.Symmetric.Algorithm, &parms.Scheme.Details
	} else if parms, err := p.Parameters.RSADetail(); p.Type == tpm2.TPMAlgRSA && err == nil {
		scheme, sym, details = parms.Scheme.Scheme, parms.Symmetric.Algorithm, &parms.Scheme.Details
	} else {
		return tpm2.TPMAlgNull, tpm2.TPMAlgNull, tpm2.TPMAlgNull
	}
	hash = tpm2.TPMAlgNull
	switch scheme {
	case tpm2.TPMAlgECDSA:
		if s, err := details.ECDSA(); err == nil {
			hash = s.HashAlg
		}
	case tpm2.TPMAlgECDAA:
		if s, err := details.ECDAA(); err == nil {
			hash = s.HashAlg
		}
	case tpm2.TPMAlgRSASSA:
		if s, err := details.RSASSA(); err == nil {
			hash = s.HashAlg
		}
	case tpm2.TPMAlgRSAPSS:
		if s, err := details.RSAPSS(); err == nil {
			hash = s.HashAlg
		}
	}
	return scheme, hash, sym
}

func schemeName(p *tpm2.TPMTPublic) string {
	scheme, hash, _ := signingScheme(p)
	name := algName(scheme)
	if hash != tpm2.TPMAlgNull {
		name += "-" + strings.ReplaceAll(algName(hash), "-", "")
	}
	switch p.Type {
	case tpm2.TPMAlgECC:
		if parms, err := p.Parameters.ECCDetail(); err == nil {
			name += " on " + curveName(parms.CurveID)
		}
	case tpm2.TPMAlgRSA:
		if parms, err := p.Parameters.RSADetail(); err == nil {
			name += " with RSA-" + strconv.Itoa(int(parms.KeyBits))
		}
	}
	return name
}
