package tpm

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"

	"github.com/plinth-id/plinth/tpm/verify"
)

// Quote signs the selected PCRs and nonce with the attestation key ak
// (TPM2_Quote). It returns the TPMS_ATTEST exactly as the TPM signed it, the
// marshalled TPMT_SIGNATURE, and the PCR values the quote covers.
//
// The values are read before the quote and checked against the quote's PCR
// digest (computed with the AK's scheme hash, in the order the TPM used); if
// a PCR changed in between, Quote reads and quotes again. So the returned
// values always match the attest. They prove nothing by themselves: the
// server must check the signature and recompute the digest.
//
// nonce should be the server's fresh challenge; a TPM accepts up to the size
// of its largest digest (64 bytes with SHA-512, 32 bytes is safe).
func (t *TPM) Quote(ctx context.Context, ak *Key, nonce []byte, sel verify.PCRSelection) (attest, sig []byte, pcrs verify.PCRValues, err error) {
	const op = "quote"
	s, err := newSelection(sel)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("tpm: quote: %w", err)
	}
	if err := t.lock(ctx); err != nil {
		return nil, nil, nil, err
	}
	defer t.unlock()
	akH, akPub, flush, err := t.load(op, ak, "AK")
	if err != nil {
		return nil, nil, nil, err
	}
	defer flush()
	hashAlg, err := signHash(akPub)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("tpm: quote: AK: %w", err)
	}
	h, err := hashAlg.Hash()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("tpm: quote: AK: %w", err)
	}
	want := s.tpm()
	for range pcrAttempts {
		pcrs, err := t.readPCRs(s)
		if err != nil {
			return nil, nil, nil, err
		}
		q, err := tpm2.Quote{SignHandle: akH, QualifyingData: tpm2.TPM2BData{Buffer: nonce}, PCRSelect: want}.Execute(t.tr)
		if err != nil {
			return nil, nil, nil, cmdErr(op, "TPM2_Quote", err)
		}
		attest = q.Quoted.Bytes()
		a, err := tpm2.Unmarshal[tpm2.TPMSAttest](attest)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("tpm: quote: parse TPMS_ATTEST: %w", err)
		}
		qi, err := a.Attested.Quote()
		if err != nil {
			return nil, nil, nil, fmt.Errorf("tpm: quote: parse TPMS_QUOTE_INFO: %w", err)
		}
		if !bytes.Equal(tpm2.Marshal(qi.PCRSelect), tpm2.Marshal(want)) {
			return nil, nil, nil, errors.New("tpm: quote: the TPM quoted another PCR selection than asked (is every selected bank active? see PCRBanks)")
		}
		d := h.New()
		for _, ref := range selected(qi.PCRSelect) {
			d.Write(pcrs[ref.bank][ref.pcr])
		}
		if bytes.Equal(d.Sum(nil), qi.PCRDigest.Buffer) {
			return attest, tpm2.Marshal(q.Signature), pcrs, nil
		}
		// A PCR was extended between the read and the quote: again.
	}
	return nil, nil, nil, fmt.Errorf("tpm: quote: the PCRs changed during each of %d attempts (something keeps extending them)", pcrAttempts)
}

// Certify has the attestation key ak sign the Name of key (TPM2_Certify) with
// nonce as qualifying data. It returns the TPMS_ATTEST exactly as signed and
// the marshalled TPMT_SIGNATURE. A server that trusts ak learns from it that
// key, with the attributes in its public area, lives in the same TPM.
func (t *TPM) Certify(ctx context.Context, key, ak *Key, nonce []byte) (attest, sig []byte, err error) {
	const op = "certify"
	if err := t.lock(ctx); err != nil {
		return nil, nil, err
	}
	defer t.unlock()
	srk, err := t.loadSRK(op)
	if err != nil {
		return nil, nil, err
	}
	keyH, _, err := t.loadUnder(op, srk, key, "key")
	if err != nil {
		t.flush(srk.Handle)
		return nil, nil, err
	}
	defer t.flush(keyH.Handle)
	akH, _, err := t.loadUnder(op, srk, ak, "AK")
	t.flush(srk.Handle)
	if err != nil {
		return nil, nil, err
	}
	defer t.flush(akH.Handle)
	c, err := tpm2.Certify{ObjectHandle: keyH, SignHandle: akH, QualifyingData: tpm2.TPM2BData{Buffer: nonce}}.Execute(t.tr)
	if err != nil {
		return nil, nil, cmdErr(op, "TPM2_Certify", err)
	}
	return c.CertifyInfo.Bytes(), tpm2.Marshal(c.Signature), nil
}

// signHash is the hash of a signing key's scheme.
func signHash(pub *tpm2.TPMTPublic) (tpm2.TPMAlgID, error) {
	switch pub.Type {
	case tpm2.TPMAlgECC:
		p, err := pub.Parameters.ECCDetail()
		if err != nil {
			return 0, err
		}
		if p.Scheme.Scheme != tpm2.TPMAlgECDSA {
			return 0, fmt.Errorf("ECC scheme %#04x is not ECDSA", uint16(p.Scheme.Scheme))
		}
		s, err := p.Scheme.Details.ECDSA()
		if err != nil {
			return 0, err
		}
		return s.HashAlg, nil
	case tpm2.TPMAlgRSA:
		p, err := pub.Parameters.RSADetail()
		if err != nil {
			return 0, err
		}
		if p.Scheme.Scheme != tpm2.TPMAlgRSASSA {
			return 0, fmt.Errorf("RSA scheme %#04x is not RSASSA", uint16(p.Scheme.Scheme))
		}
		s, err := p.Scheme.Details.RSASSA()
		if err != nil {
			return 0, err
		}
		return s.HashAlg, nil
	}
	return 0, fmt.Errorf("key type %#04x is not a signing key type", uint16(pub.Type))
}
