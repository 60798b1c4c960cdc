package tpm

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/google/go-tpm/tpm2"

	"github.com/plinth-id/plinth/tpm/verify"
)

// maxPCR is the highest PCR index a PC Client TPM has (it has exactly 24).
const maxPCR = 23

// pcrAttempts bounds how often a PCR read or quote is repeated because a PCR
// changed in the middle of it.
const pcrAttempts = 5

// selection is a validated verify.PCRSelection: banks ascending by algorithm
// ID, PCR indexes ascending and unique, empty banks dropped. It fixes the
// order in which the TPM is asked, and so the order of a quote's PCR digest.
type selection struct {
	banks []tpm2.TPMAlgID
	pcrs  map[tpm2.TPMAlgID][]int
}

func newSelection(sel verify.PCRSelection) (selection, error) {
	s := selection{pcrs: map[tpm2.TPMAlgID][]int{}}
	for bank, idx := range sel {
		if len(idx) == 0 {
			continue
		}
		h, err := bank.Hash()
		if err != nil || !h.Available() {
			return selection{}, fmt.Errorf("PCR bank %s is not a hash algorithm Plinth supports", algName(bank))
		}
		pcrs := slices.Clone(idx)
		slices.Sort(pcrs)
		pcrs = slices.Compact(pcrs)
		if pcrs[0] < 0 || pcrs[len(pcrs)-1] > maxPCR {
			return selection{}, fmt.Errorf("PCR index out of range 0-%d in bank %s", maxPCR, algName(bank))
		}
		s.banks = append(s.banks, bank)
		s.pcrs[bank] = pcrs
	}
	slices.Sort(s.banks)
	return s, nil
}

func (s selection) tpm() tpm2.TPMLPCRSelection {
	var l tpm2.TPMLPCRSelection
	for _, b := range s.banks {
		idx := make([]uint, len(s.pcrs[b]))
		for i, p := range s.pcrs[b] {
			idx[i] = uint(p)
		}
		l.PCRSelections = append(l.PCRSelections, tpm2.TPMSPCRSelection{Hash: b, PCRSelect: tpm2.PCClientCompatible.PCRs(idx...)})
	}
	return l
}

// selected lists the PCRs a TPML_PCR_SELECTION selects, in the order the TPM
// processes them (selections in order, indexes ascending).
func selected(l tpm2.TPMLPCRSelection) []pcrRef {
	var out []pcrRef
	for _, s := range l.PCRSelections {
		for i, b := range s.PCRSelect {
			for bit := 0; bit < 8; bit++ {
				if b&(1<<bit) != 0 {
					out = append(out, pcrRef{s.Hash, i*8 + bit})
				}
			}
		}
	}
	return out
}

type pcrRef struct {
	bank tpm2.TPMAlgID
	pcr  int
}

// PCRBanks returns the active PCR banks (those with at least one PCR
// allocated), ascending by algorithm ID.
func (t *TPM) PCRBanks(ctx context.Context) ([]tpm2.TPMAlgID, error) {
	if err := t.lock(ctx); err != nil {
		return nil, err
	}
	defer t.unlock()
	r, err := tpm2.GetCapability{Capability: tpm2.TPMCapPCRs, PropertyCount: 1}.Execute(t.tr)
	if err != nil {
		return nil, cmdErr("read PCR banks", "TPM2_GetCapability(PCRs)", err)
	}
	a, err := r.CapabilityData.Data.AssignedPCR()
	if err != nil {
		return nil, fmt.Errorf("tpm: read PCR banks: %w", err)
	}
	var banks []tpm2.TPMAlgID
	for _, s := range a.PCRSelections {
		if slices.ContainsFunc(s.PCRSelect, func(b byte) bool { return b != 0 }) {
			banks = append(banks, s.Hash)
		}
	}
	slices.Sort(banks)
	return banks, nil
}

// ReadPCRs reads the selected PCRs. The values are consistent: if a PCR
// changes while they are read (TPM2_PCR_Read returns at most 8 values per
// call), the read starts again.
func (t *TPM) ReadPCRs(ctx context.Context, sel verify.PCRSelection) (verify.PCRValues, error) {
	s, err := newSelection(sel)
	if err != nil {
		return nil, fmt.Errorf("tpm: read PCRs: %w", err)
	}
	if err := t.lock(ctx); err != nil {
		return nil, err
	}
	defer t.unlock()
	return t.readPCRs(s)
}

func (t *TPM) readPCRs(s selection) (verify.PCRValues, error) {
	for range pcrAttempts {
		v, changed, err := t.readPCRsOnce(s)
		if err != nil || !changed {
			return v, err
		}
	}
	return nil, fmt.Errorf("tpm: read PCRs: the PCRs changed during each of %d attempts (something keeps extending them)", pcrAttempts)
}

func (t *TPM) readPCRsOnce(s selection) (v verify.PCRValues, changed bool, err error) {
	want := map[pcrRef]bool{}
	for _, b := range s.banks {
		for _, p := range s.pcrs[b] {
			want[pcrRef{b, p}] = true
		}
	}
	v = verify.PCRValues{}
	var counter uint32
	for round := 0; len(want) > 0; round++ {
		rest := selection{pcrs: map[tpm2.TPMAlgID][]int{}}
		for _, b := range s.banks {
			for _, p := range s.pcrs[b] {
				if want[pcrRef{b, p}] {
					if len(rest.pcrs[b]) == 0 {
						rest.banks = append(rest.banks, b)
					}
					rest.pcrs[b] = append(rest.pcrs[b], p)
				}
			}
		}
		r, err := tpm2.PCRRead{PCRSelectionIn: rest.tpm()}.Execute(t.tr)
		if err != nil {
			return nil, false, cmdErr("read PCRs", "TPM2_PCR_Read", err)
		}
		if round > 0 && r.PCRUpdateCounter != counter {
			return nil, true, nil
		}
		counter = r.PCRUpdateCounter
		got := selected(r.PCRSelectionOut)
		if len(got) != len(r.PCRValues.Digests) {
			return nil, false, fmt.Errorf("tpm: read PCRs: TPM2_PCR_Read returned %d values for %d PCRs", len(r.PCRValues.Digests), len(got))
		}
		if len(got) == 0 {
			var missing []string
			for _, b := range rest.banks {
				missing = append(missing, fmt.Sprintf("%s %v", algName(b), rest.pcrs[b]))
			}
			return nil, false, fmt.Errorf("tpm: read PCRs: the TPM returned no value for %v (is the bank active? see PCRBanks; swtpm_setup --pcr-banks selects them)", missing)
		}
		for i, ref := range got {
			if !want[ref] {
				return nil, false, fmt.Errorf("tpm: read PCRs: TPM2_PCR_Read returned %s PCR %d, which was not asked for", algName(ref.bank), ref.pcr)
			}
			h, _ := ref.bank.Hash()
			d := r.PCRValues.Digests[i].Buffer
			if len(d) != h.Size() {
				return nil, false, fmt.Errorf("tpm: read PCRs: %s PCR %d has %d bytes", algName(ref.bank), ref.pcr, len(d))
			}
			if v[ref.bank] == nil {
				v[ref.bank] = map[int][]byte{}
			}
			v[ref.bank][ref.pcr] = d
			delete(want, ref)
		}
	}
	return v, false, nil
}

// Extend extends PCR pcr with one digest per bank (TPM2_PCR_Extend). Banks
// left out are not extended. PCRs 0-15 and 23 can be extended at locality 0;
// 16-22 depend on the platform's locality rules.
func (t *TPM) Extend(ctx context.Context, pcr int, digests map[tpm2.TPMAlgID][]byte) error {
	if pcr < 0 || pcr > maxPCR {
		return fmt.Errorf("tpm: extend PCR %d: index out of range 0-%d", pcr, maxPCR)
	}
	if len(digests) == 0 {
		return fmt.Errorf("tpm: extend PCR %d: no digests given", pcr)
	}
	var l tpm2.TPMLDigestValues
	for _, b := range slices.Sorted(maps.Keys(digests)) {
		h, err := b.Hash()
		if err != nil || !h.Available() {
			return fmt.Errorf("tpm: extend PCR %d: bank %s is not a hash algorithm Plinth supports", pcr, algName(b))
		}
		if len(digests[b]) != h.Size() {
			return fmt.Errorf("tpm: extend PCR %d: %s digest has %d bytes, want %d", pcr, algName(b), len(digests[b]), h.Size())
		}
		l.Digests = append(l.Digests, tpm2.TPMTHA{HashAlg: b, Digest: digests[b]})
	}
	if err := t.lock(ctx); err != nil {
		return err
	}
	defer t.unlock()
	_, err := tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: tpm2.PasswordAuth(nil)},
		Digests:   l,
	}.Execute(t.tr)
	if err != nil {
		return cmdErr(fmt.Sprintf("extend PCR %d", pcr), "TPM2_PCR_Extend", err)
	}
	return nil
}

// algName names a hash algorithm the way swtpm_setup and tpm2-tools do.
func algName(a tpm2.TPMAlgID) string {
	switch a {
	case tpm2.TPMAlgSHA1:
		return "sha1"
	case tpm2.TPMAlgSHA256:
		return "sha256"
	case tpm2.TPMAlgSHA384:
		return "sha384"
	case tpm2.TPMAlgSHA512:
		return "sha512"
	case tpm2.TPMAlgSM3256:
		return "sm3_256"
	}
	return fmt.Sprintf("alg %#04x", uint16(a))
}
