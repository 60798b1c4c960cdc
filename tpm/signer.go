package tpm

import (
	"context"
	"crypto"
	"crypto/rsa"
	"encoding/asn1"
	"fmt"
	"io"
	"math/big"

	"github.com/google/go-tpm/tpm2"
)

// Signer returns a crypto.Signer for an ECC signing key made by CreateKey.
// The private key never leaves the TPM: each Sign is a TPM2_Sign under the
// TPM's lock, and returns an ASN.1 ECDSA signature, so the Signer can be a
// tls.Certificate's PrivateKey. SHA-1, SHA-256, SHA-384 and SHA-512 digests
// are accepted (as far as the TPM implements them).
//
// The key is loaded on the first Sign and its context saved; later signatures
// restore it with TPM2_ContextLoad and flush it again at once, so it never
// holds one of the TPM's few object slots between signatures. After a TPM
// reset the saved context is refused and the key is loaded again.
func (t *TPM) Signer(key *Key) (crypto.Signer, error) {
	if key == nil {
		return nil, fmt.Errorf("tpm: signer: no key given")
	}
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](key.Public)
	if err != nil {
		return nil, fmt.Errorf("tpm: signer: parse key public: %w", err)
	}
	if pub.Type != tpm2.TPMAlgECC || !pub.ObjectAttributes.SignEncrypt || pub.ObjectAttributes.Restricted {
		return nil, fmt.Errorf("tpm: signer: the key is not a non-restricted ECC signing key (make it with CreateKey)")
	}
	pk, err := tpm2.Pub(*pub)
	if err != nil {
		return nil, fmt.Errorf("tpm: signer: %w", err)
	}
	k := &Key{Public: append([]byte(nil), key.Public...), Private: append([]byte(nil), key.Private...)}
	return &signer{t: t, key: k, pub: pk}, nil
}

type signer struct {
	t   *TPM
	key *Key
	pub crypto.PublicKey

	// Guarded by t's lock.
	saved *tpm2.TPMSContext
	name  tpm2.TPM2BName
}

func (s *signer) Public() crypto.PublicKey { return s.pub }

var signHashes = map[crypto.Hash]tpm2.TPMAlgID{
	crypto.SHA1:   tpm2.TPMAlgSHA1,
	crypto.SHA256: tpm2.TPMAlgSHA256,
	crypto.SHA384: tpm2.TPMAlgSHA384,
	crypto.SHA512: tpm2.TPMAlgSHA512,
}

// Sign signs digest, which must be the hash opts.HashFunc() of the message.
// rand is not used: the TPM makes its own nonce.
func (s *signer) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if _, ok := opts.(*rsa.PSSOptions); ok {
		return nil, fmt.Errorf("tpm: sign: RSA-PSS options given for an ECDSA key")
	}
	h := opts.HashFunc()
	alg, ok := signHashes[h]
	if !ok {
		return nil, fmt.Errorf("tpm: sign: hash %v is not supported (use SHA-256)", h)
	}
	if len(digest) != h.Size() {
		return nil, fmt.Errorf("tpm: sign: digest has %d bytes, want %d for %v", len(digest), h.Size(), h)
	}
	t := s.t
	if err := t.lock(context.Background()); err != nil {
		return nil, err
	}
	defer t.unlock()
	kh, err := s.load()
	if err != nil {
		return nil, err
	}
	defer t.flush(kh.Handle)
	r, err := tpm2.Sign{
		KeyHandle: kh,
		Digest:    tpm2.TPM2BDigest{Buffer: digest},
		InScheme: tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgECDSA,
			Details: tpm2.NewTPMUSigScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSchemeHash{HashAlg: alg})},
		// A NULL ticket: the key is not restricted, so the TPM need not
		// have computed the digest itself.
		Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck},
	}.Execute(t.tr)
	if err != nil {
		return nil, cmdErr("sign", "TPM2_Sign", err)
	}
	e, err := r.Signature.Signature.ECDSA()
	if err != nil {
		return nil, fmt.Errorf("tpm: sign: parse signature: %w", err)
	}
	return asn1.Marshal(struct{ R, S *big.Int }{
		new(big.Int).SetBytes(e.SignatureR.Buffer),
		new(big.Int).SetBytes(e.SignatureS.Buffer),
	})
}

// load restores the key from its saved context, or loads it under the SRK
// and saves its context. The caller flushes it.
func (s *signer) load() (tpm2.NamedHandle, error) {
	t := s.t
	if s.saved != nil {
		if r, err := (tpm2.ContextLoad{Context: *s.saved}).Execute(t.tr); err == nil {
			return tpm2.NamedHandle{Handle: r.LoadedHandle, Name: s.name}, nil
		}
		s.saved = nil
	}
	kh, _, _, err := t.load("sign", s.key, "key") // the caller flushes kh
	if err != nil {
		return tpm2.NamedHandle{}, err
	}
	sv, err := tpm2.ContextSave{SaveHandle: kh.Handle}.Execute(t.tr)
	if err == nil {
		s.saved, s.name = &sv.Context, kh.Name
	}
	return kh, nil
}
