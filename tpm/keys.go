package tpm

import (
	"context"
	"crypto"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// Key is a key created inside the TPM, as the two blobs TPM2_Create returned.
// Private is encrypted and integrity-protected by the storage root key, so
// only the TPM that created it can load it; both blobs may be stored in plain
// files. A Key stays loadable as long as the TPM's owner hierarchy is not
// cleared.
type Key struct {
	// Public is the key's TPMT_PUBLIC (no size prefix).
	Public []byte
	// Private is the TPM2B_PRIVATE's buffer (no size prefix).
	Private []byte
}

// PublicKey returns the key's public part (*ecdsa.PublicKey or
// *rsa.PublicKey).
func (k *Key) PublicKey() (crypto.PublicKey, error) {
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](k.Public)
	if err != nil {
		return nil, fmt.Errorf("tpm: parse key public: %w", err)
	}
	pk, err := tpm2.Pub(*pub)
	if err != nil {
		return nil, fmt.Errorf("tpm: key public: %w", err)
	}
	return pk, nil
}

// MarshalBinary encodes the key as TPM2B_PUBLIC followed by TPM2B_PRIVATE
// (each a big-endian uint16 size and the bytes), for storing in one file.
func (k *Key) MarshalBinary() ([]byte, error) {
	if len(k.Public) > 0xffff || len(k.Private) > 0xffff {
		return nil, errors.New("tpm: key blob too large")
	}
	b := binary.BigEndian.AppendUint16(nil, uint16(len(k.Public)))
	b = append(b, k.Public...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(k.Private)))
	return append(b, k.Private...), nil
}

// UnmarshalBinary decodes what MarshalBinary encoded.
func (k *Key) UnmarshalBinary(b []byte) error {
	field := func() ([]byte, error) {
		if len(b) < 2 {
			return nil, errors.New("tpm: key blob truncated")
		}
		n := int(binary.BigEndian.Uint16(b))
		if len(b) < 2+n {
			return nil, errors.New("tpm: key blob truncated")
		}
		f := append([]byte(nil), b[2:2+n]...)
		b = b[2+n:]
		return f, nil
	}
	pub, err := field()
	if err != nil {
		return err
	}
	priv, err := field()
	if err != nil {
		return err
	}
	if len(b) != 0 {
		return errors.New("tpm: key blob has trailing bytes")
	}
	if _, err := tpm2.Unmarshal[tpm2.TPMTPublic](pub); err != nil {
		return fmt.Errorf("tpm: key blob: parse public: %w", err)
	}
	k.Public, k.Private = pub, priv
	return nil
}

// AKAlg is the algorithm of an attestation key.
type AKAlg string

// Attestation key algorithms. ECC P-256 is the default: an RSA-2048 key takes
// hundreds of milliseconds to generate on swtpm and seconds on TPM chips.
const (
	AKECCP256 AKAlg = "ecc-p256"
	AKRSA2048 AKAlg = "rsa-2048"
)

// keyAttrs are the attributes every key Plinth creates has: it never leaves
// this TPM, cannot be re-parented, was generated inside the TPM, needs only
// its (empty) password for the USER and ADMIN roles, and is not subject to
// dictionary-attack lockout. AdminWithPolicy is false so that a password
// satisfies the ADMIN role ActivateCredential and Certify need.
var keyAttrs = tpm2.TPMAObject{
	FixedTPM:            true,
	FixedParent:         true,
	SensitiveDataOrigin: true,
	UserWithAuth:        true,
	NoDA:                true,
	SignEncrypt:         true,
}

func eccTemplate(restricted bool) tpm2.TPMTPublic {
	attrs := keyAttrs
	attrs.Restricted = restricted
	scheme := tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull}
	if restricted {
		// A restricted signing key must have a scheme; the quote's PCR
		// digest uses its hash.
		scheme = tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDSA, Details: tpm2.NewTPMUAsymScheme(
			tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256})}
	}
	return tpm2.TPMTPublic{
		Type:             tpm2.TPMAlgECC,
		NameAlg:          tpm2.TPMAlgSHA256,
		ObjectAttributes: attrs,
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme:    scheme,
			CurveID:   tpm2.TPMECCNistP256,
			KDF:       tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
	}
}

func rsaAKTemplate() tpm2.TPMTPublic {
	attrs := keyAttrs
	attrs.Restricted = true
	return tpm2.TPMTPublic{
		Type:             tpm2.TPMAlgRSA,
		NameAlg:          tpm2.TPMAlgSHA256,
		ObjectAttributes: attrs,
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme: tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgRSASSA, Details: tpm2.NewTPMUAsymScheme(
				tpm2.TPMAlgRSASSA, &tpm2.TPMSSigSchemeRSASSA{HashAlg: tpm2.TPMAlgSHA256})},
			KeyBits: 2048,
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{}),
	}
}

// CreateAK creates an attestation key: a restricted signing key (it signs
// only TPM-generated structures such as quotes and certifications) with
// fixedTPM, fixedParent and sensitiveDataOrigin, under the ECC P-256 storage
// root key. Its scheme is ECDSA-SHA256 or RSASSA-SHA256.
func (t *TPM) CreateAK(ctx context.Context, alg AKAlg) (*Key, error) {
	var tmpl tpm2.TPMTPublic
	switch alg {
	case AKECCP256:
		tmpl = eccTemplate(true)
	case AKRSA2048:
		tmpl = rsaAKTemplate()
	default:
		return nil, fmt.Errorf("tpm: create AK: algorithm %q is not supported (use %q or %q)", alg, AKECCP256, AKRSA2048)
	}
	return t.create(ctx, "create AK", tmpl)
}

// CreateKey creates a non-restricted ECC P-256 signing key (the agent's TLS
// key) with fixedTPM, fixedParent and sensitiveDataOrigin under the storage
// root key. Its scheme is NULL, so Signer may use any hash the TPM supports.
// Certify it with an AK to prove to a server that it lives in this TPM.
func (t *TPM) CreateKey(ctx context.Context) (*Key, error) {
	return t.create(ctx, "create key", eccTemplate(false))
}

func (t *TPM) create(ctx context.Context, op string, tmpl tpm2.TPMTPublic) (*Key, error) {
	if err := t.lock(ctx); err != nil {
		return nil, err
	}
	defer t.unlock()
	srk, err := t.loadSRK(op)
	if err != nil {
		return nil, err
	}
	defer t.flush(srk.Handle)
	cr, err := tpm2.Create{ParentHandle: srk, InPublic: tpm2.New2B(tmpl)}.Execute(t.tr)
	if err != nil {
		return nil, cmdErr(op, "TPM2_Create", err)
	}
	return &Key{Public: cr.OutPublic.Bytes(), Private: cr.OutPrivate.Buffer}, nil
}

// loadSRK loads the ECC P-256 storage root key (TCG template, owner
// hierarchy), which the same owner seed always derives again. The caller
// flushes it.
func (t *TPM) loadSRK(op string) (tpm2.NamedHandle, error) {
	h, _, err := t.loadPrimary(op, tpm2.TPMRHOwner, tpm2.ECCSRKTemplate)
	return h, err
}

// loadUnder loads a key blob under a loaded SRK. The caller flushes it.
func (t *TPM) loadUnder(op string, srk tpm2.NamedHandle, k *Key, what string) (tpm2.NamedHandle, *tpm2.TPMTPublic, error) {
	if k == nil {
		return tpm2.NamedHandle{}, nil, fmt.Errorf("tpm: %s: no %s given", op, what)
	}
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](k.Public)
	if err != nil {
		return tpm2.NamedHandle{}, nil, fmt.Errorf("tpm: %s: parse %s public: %w", op, what, err)
	}
	ld, err := tpm2.Load{ParentHandle: srk, InPrivate: tpm2.TPM2BPrivate{Buffer: k.Private},
		InPublic: tpm2.BytesAs2B[tpm2.TPMTPublic](k.Public)}.Execute(t.tr)
	if err != nil {
		if errors.Is(err, tpm2.TPMRCIntegrity) || errors.Is(err, tpm2.TPMRCSize) || errors.Is(err, tpm2.TPMRCValue) {
			return tpm2.NamedHandle{}, nil, fmt.Errorf("tpm: %s: TPM2_Load(%s): %w (the key blob was not created by this TPM, is corrupt, or the TPM owner hierarchy was cleared: delete the stored key so that it is created again)", op, what, err)
		}
		return tpm2.NamedHandle{}, nil, cmdErr(op, "TPM2_Load("+what+")", err)
	}
	return tpm2.NamedHandle{Handle: ld.ObjectHandle, Name: ld.Name}, pub, nil
}

// load loads one key blob; the returned function flushes it.
func (t *TPM) load(op string, k *Key, what string) (tpm2.NamedHandle, *tpm2.TPMTPublic, func(), error) {
	srk, err := t.loadSRK(op)
	if err != nil {
		return tpm2.NamedHandle{}, nil, nil, err
	}
	h, pub, err := t.loadUnder(op, srk, k, what)
	t.flush(srk.Handle)
	if err != nil {
		return tpm2.NamedHandle{}, nil, nil, err
	}
	return h, pub, func() { t.flush(h.Handle) }, nil
}
