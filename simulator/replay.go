package simulator

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/google/go-tpm/tpm2"

	"github.com/plinth-id/plinth/tpm"
	"github.com/plinth-id/plinth/tpm/verify"
)

// ExtendEventLog extends the digests of every event of log, except
// EV_NO_ACTION events, into t's PCRs, in the log's order: afterwards the
// TPM's PCRs are what firmware that wrote log would have left, so a quote
// replays against log. This is how tests give swtpm or the in-process
// simulator, which have no firmware, a measured boot (see BuildBootLog).
//
// Every bank the log carries that the TPM has active is extended (real logs
// carry banks a TPM may not allocate, GCE's SHA-384 for one); at least one
// must be. Banks the TPM has active but the log does not carry are left
// alone, so those PCRs will not match the log. The PCRs must start at their
// reset values: extend a log into a freshly started TPM, once.
//
// If the log has a StartupLocality event with locality L other than 0, PCR 0
// must start at 00…0L, that is the TPM must have been started at locality L,
// or ExtendEventLog fails before extending anything: start swtpm with
// StartSWTPMAt. The in-process simulator cannot be started at locality 3
// (go-tpm-tools exposes no locality control), so such a log cannot be
// replayed into it.
//
// An error names the event that failed.
func ExtendEventLog(ctx context.Context, t *tpm.TPM, log []byte) error {
	l, err := verify.ParseEventLog(log)
	if err != nil {
		return fmt.Errorf("simulator: replay event log: %w", err)
	}
	active, err := t.PCRBanks(ctx)
	if err != nil {
		return fmt.Errorf("simulator: replay event log: %w", err)
	}
	var banks []tpm2.TPMAlgID // the log's banks the TPM has; others are skipped, as a verifier skips banks not quoted
	for _, b := range l.Banks {
		if slices.Contains(active, b) {
			banks = append(banks, b)
		}
	}
	if len(banks) == 0 {
		return fmt.Errorf("simulator: replay event log: the TPM has none of the log's banks (log: %s; active: %s)", bankNames(l.Banks), bankNames(active))
	}
	if loc := l.StartupLocality(); loc != 0 {
		bank := banks[0]
		if slices.Contains(banks, tpm2.TPMAlgSHA256) {
			bank = tpm2.TPMAlgSHA256
		}
		v, err := t.ReadPCRs(ctx, verify.PCRSelection{bank: {0}})
		if err != nil {
			return fmt.Errorf("simulator: replay event log: %w", err)
		}
		pcr0 := v[bank][0]
		want := make([]byte, len(pcr0))
		want[len(want)-1] = loc
		if !bytes.Equal(pcr0, want) {
			return fmt.Errorf("simulator: replay event log: the log was recorded with StartupLocality %d: start the TPM at locality %d (StartSWTPMAt) before replaying it (%s PCR 0 is %x)", loc, loc, verify.BankName(bank), pcr0)
		}
	}
	for _, e := range l.Events {
		if e.Type == verify.EvNoAction {
			continue
		}
		digests := make(map[tpm2.TPMAlgID][]byte, len(e.Digests))
		for _, b := range banks {
			digests[b] = e.Digest(b)
		}
		if err := t.Extend(ctx, e.PCR, digests); err != nil {
			return fmt.Errorf("simulator: replay event log: event %d (PCR %d, %s): %w", e.Seq, e.PCR, e.Type, err)
		}
	}
	return nil
}

func bankNames(banks []tpm2.TPMAlgID) string {
	if len(banks) == 0 {
		return "none"
	}
	return strings.Join(verify.BankNames(banks), ", ")
}
