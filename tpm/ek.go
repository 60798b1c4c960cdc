package tpm

import (
	"bytes"
	"context"
	"encoding/asn1"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// Well-known handles of EKs and their certificates (TCG EK Credential Profile
// 2.0, section 2.2.1.4; swtpm for P-384).
const (
	// NVIndexRSAEKCert holds the RSA-2048 EK certificate.
	NVIndexRSAEKCert tpm2.TPMHandle = 0x01c00002
	// NVIndexECCEKCert holds the ECC NIST P-256 EK certificate.
	NVIndexECCEKCert tpm2.TPMHandle = 0x01c0000a
	// NVIndexECCP384EKCert holds the ECC NIST P-384 EK certificate (swtpm).
	NVIndexECCP384EKCert tpm2.TPMHandle = 0x01c00016

	// PersistentRSAEK is where firmware and swtpm keep the RSA-2048 EK.
	PersistentRSAEK tpm2.TPMHandle = 0x81010001
	// PersistentECCP384EK is where swtpm keeps its ECC P-384 EK.
	PersistentECCP384EK tpm2.TPMHandle = 0x81010016

	// Optional EK template and nonce indexes (TCG EK Credential Profile,
	// low range): when present the EK is derived from them, not from the
	// default template.
	nvRSAEKNonce    tpm2.TPMHandle = 0x01c00003
	nvRSAEKTemplate tpm2.TPMHandle = 0x01c00004
	nvECCEKNonce    tpm2.TPMHandle = 0x01c0000b
	nvECCEKTemplate tpm2.TPMHandle = 0x01c0000c
)

const opEK = "read EK"

// EK is a TPM's endorsement key: its public area and, when the manufacturer
// provisioned one, its certificate.
//
// The EK public comes from this TPM, but nothing here proves that to anyone
// else: the server trusts an EK only through its certificate chain or an
// enrollment list, and proves possession with ActivateCredential.
type EK struct {
	// Public is the EK's TPMT_PUBLIC, as the TPM returned it.
	Public []byte
	// Cert is the EK certificate (DER, padding trimmed), or nil if the TPM
	// has none for this EK.
	Cert []byte
	// CertIndex is the NV index Cert was read from (0 when Cert is nil).
	CertIndex tpm2.TPMHandle

	handle ekHandle
}

// ekHandle says how to load the EK again for ActivateCredential.
type ekHandle struct {
	persistent tpm2.TPMHandle   // non-zero: the EK is persistent here
	template   *tpm2.TPMTPublic // otherwise: CreatePrimary in the endorsement hierarchy
}

// EK reads the endorsement key and its certificate.
//
// A TPM can have several EKs; EK prefers one that has a certificate, in this
// order:
//  1. the ECC P-256 EK (default template tpm2.ECCEKTemplate), certificate in
//     NV 0x01c0000a;
//  2. the RSA-2048 EK (persistent 0x81010001 if present, else
//     tpm2.RSAEKTemplate), certificate in NV 0x01c00002;
//  3. swtpm's ECC P-384 EK (persistent 0x81010016), certificate in NV
//     0x01c00016.
//
// With no certificate anywhere it returns the RSA-2048 EK without one (the
// server must then find the EK in its enrollment list). EK templates and
// nonces that the manufacturer stored in NV (0x01c00003/4, 0x01c0000b/c) are
// honoured, so the EK matches its certificate. The certificate is returned
// as read; checking it, and that its key is Public's, is the verifier's job.
func (t *TPM) EK(ctx context.Context) (*EK, error) {
	if err := t.lock(ctx); err != nil {
		return nil, err
	}
	defer t.unlock()

	// 1. ECC P-256.
	cert, err := t.readNVIfPresent(opEK, NVIndexECCEKCert)
	if err != nil {
		return nil, err
	}
	if cert != nil {
		tmpl, err := t.ekTemplate(tpm2.ECCEKTemplate, nvECCEKTemplate, nvECCEKNonce)
		if err != nil {
			return nil, err
		}
		return t.templateEK(tmpl, cert, NVIndexECCEKCert)
	}
	// 2. RSA-2048.
	cert, err = t.readNVIfPresent(opEK, NVIndexRSAEKCert)
	if err != nil {
		return nil, err
	}
	if cert != nil {
		return t.rsaEK(cert)
	}
	// 3. swtpm's ECC P-384.
	cert, err = t.readNVIfPresent(opEK, NVIndexECCP384EKCert)
	if err != nil {
		return nil, err
	}
	if cert != nil {
		pub, _, err := t.readPublic(PersistentECCP384EK)
		if err != nil {
			return nil, cmdErr(opEK, fmt.Sprintf("TPM2_ReadPublic(ECC P-384 EK at %#x, whose certificate exists)", uint32(PersistentECCP384EK)), err)
		}
		return &EK{Public: pub, Cert: cert, CertIndex: NVIndexECCP384EKCert, handle: ekHandle{persistent: PersistentECCP384EK}}, nil
	}
	// No certificate: the RSA EK.
	return t.rsaEK(nil)
}

func (t *TPM) rsaEK(cert []byte) (*EK, error) {
	var idx tpm2.TPMHandle
	if cert != nil {
		idx = NVIndexRSAEKCert
	}
	pub, _, err := t.readPublic(PersistentRSAEK)
	switch {
	case err == nil:
		return &EK{Public: pub, Cert: cert, CertIndex: idx, handle: ekHandle{persistent: PersistentRSAEK}}, nil
	case errors.Is(err, tpm2.TPMRCHandle):
		tmpl, err := t.ekTemplate(tpm2.RSAEKTemplate, nvRSAEKTemplate, nvRSAEKNonce)
		if err != nil {
			return nil, err
		}
		return t.templateEK(tmpl, cert, idx)
	default:
		return nil, cmdErr(opEK, fmt.Sprintf("TPM2_ReadPublic(RSA EK at %#x)", uint32(PersistentRSAEK)), err)
	}
}

// templateEK creates the EK from tmpl to learn its public area.
func (t *TPM) templateEK(tmpl tpm2.TPMTPublic, cert []byte, idx tpm2.TPMHandle) (*EK, error) {
	h, pub, err := t.loadPrimary(opEK, tpm2.TPMRHEndorsement, tmpl)
	if err != nil {
		return nil, err
	}
	t.flush(h.Handle)
	return &EK{Public: pub, Cert: cert, CertIndex: idx, handle: ekHandle{template: &tmpl}}, nil
}

// ekTemplate returns def, or the template the manufacturer stored in NV
// (with the nonce, if any, as the start of the unique field).
func (t *TPM) ekTemplate(def tpm2.TPMTPublic, tmplIdx, nonceIdx tpm2.TPMHandle) (tpm2.TPMTPublic, error) {
	b, err := t.readNVIfPresent(opEK, tmplIdx)
	if err != nil {
		return def, err
	}
	if b == nil {
		return def, nil
	}
	tmpl, err := tpm2.Unmarshal[tpm2.TPMTPublic](b)
	if err != nil {
		return def, fmt.Errorf("tpm: %s: parse the EK template in NV %#x: %w", opEK, uint32(tmplIdx), err)
	}
	nonce, err := t.readNVIfPresent(opEK, nonceIdx)
	if err != nil {
		return def, err
	}
	if nonce != nil {
		switch tmpl.Type {
		case tpm2.TPMAlgRSA:
			u := make([]byte, 256)
			copy(u, nonce)
			tmpl.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: u})
		case tpm2.TPMAlgECC:
			x := make([]byte, 32)
			copy(x, nonce)
			tmpl.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
				X: tpm2.TPM2BECCParameter{Buffer: x}, Y: tpm2.TPM2BECCParameter{Buffer: make([]byte, 32)}})
		}
	}
	return *tmpl, nil
}

// loadEK makes ek usable in a command. The returned function flushes it if
// it was created for the occasion.
func (t *TPM) loadEK(op string, ek *EK) (tpm2.NamedHandle, *tpm2.TPMTPublic, func(), error) {
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](ek.Public)
	if err != nil {
		return tpm2.NamedHandle{}, nil, nil, fmt.Errorf("tpm: %s: parse EK public: %w", op, err)
	}
	switch {
	case ek.handle.persistent != 0:
		b, name, err := t.readPublic(ek.handle.persistent)
		if err != nil {
			return tpm2.NamedHandle{}, nil, nil, cmdErr(op, fmt.Sprintf("TPM2_ReadPublic(EK at %#x)", uint32(ek.handle.persistent)), err)
		}
		if !bytes.Equal(b, ek.Public) {
			return tpm2.NamedHandle{}, nil, nil, fmt.Errorf("tpm: %s: the EK at its persistent handle is not the one given: was the EK read from another TPM?", op)
		}
		return tpm2.NamedHandle{Handle: ek.handle.persistent, Name: name}, pub, func() {}, nil
	case ek.handle.template != nil:
		h, b, err := t.loadPrimary(op, tpm2.TPMRHEndorsement, *ek.handle.template)
		if err != nil {
			return tpm2.NamedHandle{}, nil, nil, err
		}
		flush := func() { t.flush(h.Handle) }
		if !bytes.Equal(b, ek.Public) {
			flush()
			return tpm2.NamedHandle{}, nil, nil, fmt.Errorf("tpm: %s: the EK derived from its template is not the one given: was the EK read from another TPM?", op)
		}
		return h, pub, flush, nil
	default:
		return tpm2.NamedHandle{}, nil, nil, fmt.Errorf("tpm: %s: the EK was not returned by TPM.EK", op)
	}
}

// readPublic returns the TPMT_PUBLIC and Name of a loaded or persistent
// object.
func (t *TPM) readPublic(h tpm2.TPMHandle) ([]byte, tpm2.TPM2BName, error) {
	rp, err := tpm2.ReadPublic{ObjectHandle: h}.Execute(t.tr)
	if err != nil {
		return nil, tpm2.TPM2BName{}, err
	}
	return rp.OutPublic.Bytes(), rp.Name, nil
}

// readNVIfPresent reads a whole NV index. It returns nil, nil when the index
// is not defined; an EK certificate or template is trimmed to its DER length.
func (t *TPM) readNVIfPresent(op string, idx tpm2.TPMHandle) ([]byte, error) {
	pr, err := tpm2.NVReadPublic{NVIndex: idx}.Execute(t.tr)
	if errors.Is(err, tpm2.TPMRCHandle) {
		return nil, nil
	}
	if err != nil {
		return nil, cmdErr(op, fmt.Sprintf("TPM2_NV_ReadPublic(%#x)", uint32(idx)), err)
	}
	nvp, err := pr.NVPublic.Contents()
	if err != nil {
		return nil, fmt.Errorf("tpm: %s: parse the NV public area of %#x: %w", op, uint32(idx), err)
	}
	if !nvp.Attributes.Written {
		return nil, nil
	}
	nvh := tpm2.NamedHandle{Handle: idx, Name: pr.NVName}
	if !nvp.Attributes.AuthRead && !nvp.Attributes.OwnerRead {
		return nil, fmt.Errorf("tpm: %s: NV index %#x can be read neither with its own nor with owner authorization", op, uint32(idx))
	}
	chunk := t.nvBufferMax()
	out := make([]byte, 0, nvp.DataSize)
	for off := 0; off < int(nvp.DataSize); {
		n := min(chunk, int(nvp.DataSize)-off)
		cmd := tpm2.NVRead{AuthHandle: tpm2.TPMRHOwner, NVIndex: nvh, Size: uint16(n), Offset: uint16(off)}
		if nvp.Attributes.AuthRead {
			cmd.AuthHandle = nvh // the index's own (empty) authValue
		}
		r, err := cmd.Execute(t.tr)
		if err != nil {
			return nil, cmdErr(op, fmt.Sprintf("TPM2_NV_Read(%#x, offset %d)", uint32(idx), off), err)
		}
		if len(r.Data.Buffer) != n {
			return nil, fmt.Errorf("tpm: %s: TPM2_NV_Read(%#x) returned %d bytes, want %d", op, uint32(idx), len(r.Data.Buffer), n)
		}
		out = append(out, r.Data.Buffer...)
		off += n
	}
	if idx == NVIndexECCEKCert || idx == NVIndexRSAEKCert || idx == NVIndexECCP384EKCert {
		return trimDER(op, idx, out)
	}
	return out, nil
}

// trimDER cuts the padding some manufacturers leave after the certificate
// (the index is often larger than the certificate).
func trimDER(op string, idx tpm2.TPMHandle, b []byte) ([]byte, error) {
	var v asn1.RawValue
	rest, err := asn1.Unmarshal(b, &v)
	if err != nil || v.Class != asn1.ClassUniversal || v.Tag != asn1.TagSequence || !v.IsCompound {
		return nil, fmt.Errorf("tpm: %s: NV index %#x does not start with a DER certificate", op, uint32(idx))
	}
	return b[:len(b)-len(rest)], nil
}

// nvBufferMax is the largest NV read or write the TPM accepts.
func (t *TPM) nvBufferMax() int {
	r, err := tpm2.GetCapability{Capability: tpm2.TPMCapTPMProperties,
		Property: uint32(tpm2.TPMPTNVBufferMax), PropertyCount: 1}.Execute(t.tr)
	if err == nil {
		if p, err := r.CapabilityData.Data.TPMProperties(); err == nil && len(p.TPMProperty) > 0 &&
			p.TPMProperty[0].Property == tpm2.TPMPTNVBufferMax && p.TPMProperty[0].Value > 0 {
			return int(p.TPMProperty[0].Value)
		}
	}
	return 512
}
