package tpm

import (
	"encoding/binary"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// savedObject is a TPM2_ContextSave of a loaded object, with what
// TPM2_ContextLoad does not return.
type savedObject struct {
	ctx  tpm2.TPMSContext
	name tpm2.TPM2BName
	pub  []byte // TPMT_PUBLIC
}

// loadPrimary loads the primary key tmpl derives in hierarchy h and returns
// its handle and TPMT_PUBLIC; the caller flushes it.
//
// Deriving a primary key is slow on TPM chips (ECC: tens of milliseconds; RSA:
// seconds, as it searches for primes). So the first derivation's context is
// saved and later calls restore it with TPM2_ContextLoad. A saved context is
// integrity-protected by the TPM and refused after a TPM reset or a change of
// the hierarchy's seed, and then the key is derived again.
func (t *TPM) loadPrimary(op string, h tpm2.TPMHandle, tmpl tpm2.TPMTPublic) (tpm2.NamedHandle, []byte, error) {
	key := string(binary.BigEndian.AppendUint32(tpm2.Marshal(tmpl), uint32(h)))
	if s, ok := t.primaries[key]; ok {
		if r, err := (tpm2.ContextLoad{Context: s.ctx}).Execute(t.tr); err == nil {
			return tpm2.NamedHandle{Handle: r.LoadedHandle, Name: s.name}, s.pub, nil
		}
		delete(t.primaries, key)
	}
	cp, err := tpm2.CreatePrimary{PrimaryHandle: h, InPublic: tpm2.New2B(tmpl)}.Execute(t.tr)
	if err != nil {
		return tpm2.NamedHandle{}, nil, cmdErr(op, fmt.Sprintf("TPM2_CreatePrimary(%s)", hierarchyName(h)), err)
	}
	pub := cp.OutPublic.Bytes()
	if sv, err := (tpm2.ContextSave{SaveHandle: cp.ObjectHandle}).Execute(t.tr); err == nil {
		t.primaries[key] = savedObject{ctx: sv.Context, name: cp.Name, pub: pub}
	}
	return tpm2.NamedHandle{Handle: cp.ObjectHandle, Name: cp.Name}, pub, nil
}

func hierarchyName(h tpm2.TPMHandle) string {
	switch h {
	case tpm2.TPMRHOwner:
		return "owner"
	case tpm2.TPMRHEndorsement:
		return "endorsement"
	case tpm2.TPMRHPlatform:
		return "platform"
	case tpm2.TPMRHNull:
		return "null"
	}
	return fmt.Sprintf("%#x", uint32(h))
}
