package verify

import (
	"bytes"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/google/go-tpm/tpm2"
)

// lastLoggedPCR is the last PCR firmware and bootloaders log every
// measurement of (PCR 0-7 firmware, 8-9 GRUB).
const lastLoggedPCR = 9

// Replayed records which PCRs of which banks a log was proven against: the
// events on them are exactly what the TPM measured. Events on any other PCR
// or bank are unproven and no decision may read them.
type Replayed map[tpm2.TPMAlgID]map[int]bool

// Has reports whether pcr in bank alg replayed.
func (r Replayed) Has(alg tpm2.TPMAlgID, pcr int) bool { return r[alg][pcr] }

// StartupLocality returns the locality the log says the TPM started at (0
// without a StartupLocality event); PCR 0 resets to that value. Only the first such event before any
// measurement on PCR 0 counts, as the PC Client spec places it.
func (l *EventLog) StartupLocality() byte {
	for _, e := range l.Events {
		if e.PCR != 0 {
			continue
		}
		if e.Type != EvNoAction {
			return 0
		}
		if bytes.HasPrefix(e.Data, startupLocalitySignature) && len(e.Data) == len(startupLocalitySignature)+1 {
			return e.Data[len(startupLocalitySignature)]
		}
	}
	return 0
}

// fold returns the values pcr takes in bank alg as the log's events are
// extended, from its reset value: vals[0] is the reset value and vals[i]
// the value after the i-th measured event, whose indexes into l.Events are
// in seqs.
func (l *EventLog) fold(alg tpm2.TPMAlgID, pcr int) (vals [][]byte, seqs []int) {
	h, _ := bankHash(alg)
	v := make([]byte, h.Size())
	switch {
	case pcr == 0:
		v[len(v)-1] = l.StartupLocality()
	case pcr >= 17 && pcr <= 22:
		// The dynamic-launch PCRs reset to all ones at boot.
		for i := range v {
			v[i] = 0xff
		}
	}
	vals = append(vals, v)
	hh := h.New()
	for i := range l.Events {
		e := &l.Events[i]
		if e.PCR != pcr || e.Type == EvNoAction {
			continue
		}
		hh.Reset()
		hh.Write(v)
		hh.Write(e.Digest(alg))
		v = hh.Sum(nil)
		vals = append(vals, v)
		seqs = append(seqs, i)
	}
	return vals, seqs
}

// Replay checks the log against PCR values a verified quote holds.
//
// Every quoted PCR with events in the log must equal them extended in order
// from the PCR's reset value (PCR 0 starting at the log's StartupLocality,
// PCRs 17-22 at all ones), in every quoted bank the log carries: a log that
// replays in one bank but not in another is refused. A log without SHA-256
// digests from a TPM with a SHA-256 bank is refused too: SHA-1 alone does not
// resist collisions, so such a log could describe another boot. (A quoted
// bank other than SHA-256 that the log lacks is not replayed.) A quoted PCR the log
// has no events for must be at its reset value if it is one of 0-9, which
// firmware and bootloader log in full; PCRs 10 and up may be extended later
// by the running system (IMA, systemd), so such a PCR, when not at its reset
// value, is then not replayed, and no fact is read from it. A bank the log carries but the quote does not
// cover (firmware logs banks the TPM has not allocated, GCE's SHA-384 for
// one) is not replayed either; nor is one this package cannot hash.
//
// When a PCR does not replay, the error names the first event where the
// log and the TPM part: events added after what the TPM measured are found
// exactly; for an event changed, removed or reordered the error names the
// PCR, the bank and, when the log's data or its other banks show it, the
// event.
func (l *EventLog) Replay(quoted PCRValues) (Replayed, error) {
	const check = "event log"
	out := Replayed{}
	if _, ok := quoted[tpm2.TPMAlgSHA256]; ok && !slices.Contains(l.Banks, tpm2.TPMAlgSHA256) {
		return nil, fail(check, "the TPM has a sha256 bank, which the log does not carry (it has %s): SHA-1 alone cannot vouch for a boot", bankList(l.Banks))
	}
	var banks, unknown []tpm2.TPMAlgID
	for _, alg := range l.Banks {
		if _, ok := quoted[alg]; !ok {
			continue
		}
		// The log's banks are the client's choice: fold can only hash the
		// banks bankHash knows.
		if _, ok := bankHash(alg); !ok {
			unknown = append(unknown, alg)
			continue
		}
		banks = append(banks, alg)
	}
	switch {
	case len(banks) == 0 && len(unknown) > 0:
		return nil, fail(check, "the quote covers only banks of the log that cannot be replayed (%s; sha1, sha256, sha384 and sha512 can)", bankList(unknown))
	case len(banks) == 0:
		return nil, fail(check, "none of the log's banks (%s) is in the quote", bankList(l.Banks))
	}
	for _, alg := range banks {
		pcrs := make([]int, 0, len(quoted[alg]))
		for p := range quoted[alg] {
			pcrs = append(pcrs, p)
		}
		slices.Sort(pcrs)
		out[alg] = map[int]bool{}
		for _, p := range pcrs {
			vals, seqs := l.fold(alg, p)
			got := vals[len(vals)-1]
			if subtle.ConstantTimeCompare(got, quoted[alg][p]) == 1 {
				out[alg][p] = true
				continue
			}
			if len(seqs) == 0 && p > lastLoggedPCR {
				continue // extended after boot, not logged: see above
			}
			return nil, fail(check, "%s", l.divergence(alg, p, quoted[alg][p], vals, seqs, quoted))
		}
	}
	return out, nil
}

// divergence explains why pcr in bank alg does not replay to want.
func (l *EventLog) divergence(alg tpm2.TPMAlgID, pcr int, want []byte, vals [][]byte, seqs []int, quoted PCRValues) string {
	head := fmt.Sprintf("PCR %d does not replay in bank %s", pcr, algName(alg))
	if len(seqs) == 0 {
		return fmt.Sprintf("%s: the log has no events for it, but the TPM measured into it", head)
	}
	// The TPM stopped earlier than the log: events were added after it.
	for k := len(vals) - 2; k >= 0; k-- {
		if bytes.Equal(vals[k], want) {
			e := l.Events[seqs[k]]
			return fmt.Sprintf("%s: the TPM measured only the first %d of the log's %d events on it; event %d (%s) and any after it were never measured (added to the log)",
				head, k, len(seqs), e.Seq, e.Type)
		}
	}
	// An event whose data no longer hashes to this bank's digest.
	for _, i := range seqs {
		e := &l.Events[i]
		if dataBound(e.Type) && !digestMatches(e, alg, e.Data) && digestMatchesAny(e, e.Data) {
			return fmt.Sprintf("%s: from event %d (%s): its %s digest does not match its data, its other digests do", head, e.Seq, e.Type, algName(alg))
		}
	}
	// Another bank replays: the log's banks disagree with each other.
	for _, other := range l.Banks {
		if other == alg {
			continue
		}
		q, ok := quoted[other][pcr]
		if _, known := bankHash(other); !ok || !known {
			continue
		}
		if ov, _ := l.fold(other, pcr); bytes.Equal(ov[len(ov)-1], q) {
			return fmt.Sprintf("%s, but does in bank %s: the log's banks disagree (an event's %s digest was changed)", head, algName(other), algName(alg))
		}
	}
	return fmt.Sprintf("%s: its %d events give %s, the quote has %s; an event was changed, removed, duplicated or reordered, or the log is from another boot or machine",
		head, len(seqs), short(vals[len(vals)-1]), short(want))
}

// dataBound reports whether events of type t measure exactly their data
// (the digest is the hash of the event data), as the PC Client spec says.
func dataBound(t EventType) bool {
	switch t {
	case EvSeparator, EvAction, EvEFIAction, EvSCRTMVersion, EvEFIVariableDriverConfig, EvEFIVariableAuthority, EvEFIGPTEvent:
		return true
	}
	return false
}

// digestMatches reports whether e's digest in bank alg is the hash of m.
func digestMatches(e *Event, alg tpm2.TPMAlgID, m []byte) bool {
	h, ok := bankHash(alg)
	d := e.Digest(alg)
	if !ok || d == nil {
		return false
	}
	hh := h.New()
	hh.Write(m)
	return bytes.Equal(hh.Sum(nil), d)
}

func digestMatchesAny(e *Event, m []byte) bool {
	for _, d := range e.Digests {
		if digestMatches(e, d.Alg, m) {
			return true
		}
	}
	return false
}

// bindData checks that every digest e carries is the hash of m: the event's
// content is what was measured, not just its digest.
func bindData(e *Event, m []byte, what string) *Error {
	for _, d := range e.Digests {
		if !digestMatches(e, d.Alg, m) {
			return fail("event log", "event %d (%s, PCR %d, %s): its data does not match its %s digest",
				e.Seq, e.Type, e.PCR, what, algName(d.Alg))
		}
	}
	return nil
}

func short(b []byte) string {
	s := hex.EncodeToString(b)
	if len(s) > 16 {
		return s[:16] + "…"
	}
	return s
}

func bankList(banks []tpm2.TPMAlgID) string { return strings.Join(BankNames(banks), ", ") }

// PCRValues are the values the log's events extend to, for every PCR with
// events in every bank this package can replay. They are the log's claim,
// not evidence: what `tpm eventlog show` prints, and what a quote must equal.
func (l *EventLog) PCRValues() PCRValues {
	out := PCRValues{}
	for _, alg := range l.Banks {
		if _, ok := bankHash(alg); !ok {
			continue
		}
		out[alg] = map[int][]byte{}
		for i := range l.Events {
			if p := l.Events[i].PCR; l.Events[i].Type != EvNoAction && out[alg][p] == nil {
				vals, _ := l.fold(alg, p)
				out[alg][p] = vals[len(vals)-1]
			}
		}
	}
	return out
}
