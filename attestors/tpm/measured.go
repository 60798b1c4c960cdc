package tpm

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/plinth-id/plinth/attestors"
	"github.com/plinth-id/plinth/tpm/verify"
)

// EvidenceBootState is the evidence key of the boot state (JSON of a
// verify.BootState) kept with the agent's record: what `tpm policy learn`
// and `tpm policy test` read.
const EvidenceBootState = "boot_state_json"

// check replays the event log against the verified PCR values, evaluates
// every policy and returns the boot selectors. It fails when there is no
// log, when the log does not replay or when the required policy fails; in
// audit mode it records that failure in evidence instead. The boot state
// and the policies passed are recorded in evidence either way.
func (m *MeasuredBoot) check(rawLog []byte, pcrs verify.PCRValues, evidence map[string]string) ([]attestors.Selector, error) {
	sels, err := m.evaluate(rawLog, pcrs, evidence)
	if err != nil && m.Audit {
		// Audit mode: what enforcement would refuse is recorded; the node
		// keeps the selectors of what was proven (none if the log failed).
		evidence["measured_boot_audit_failure"] = err.Error()
		return sels, nil
	}
	return sels, err
}

func (m *MeasuredBoot) evaluate(rawLog []byte, pcrs verify.PCRValues, evidence map[string]string) ([]attestors.Selector, error) {
	if len(rawLog) == 0 {
		return nil, errors.New("measured boot: the agent sent no event log (set event_log_path in the agent's NodeAttestor \"tpm\", and check that securityfs is mounted)")
	}
	_, st, err := verify.VerifyEventLog(rawLog, pcrs)
	if err != nil {
		return nil, fmt.Errorf("measured boot: %w", err)
	}
	b, _ := json.Marshal(st)
	evidence[EvidenceBootState] = string(b)
	summarize(st, evidence)
	sels := BootSelectors(st)
	var passed []string
	var failure []string
	for i := range m.Policies {
		p := &m.Policies[i]
		reasons := p.Evaluate(st)
		if len(reasons) == 0 {
			passed = append(passed, p.Name)
			sels = append(sels, attestors.Selector{Type: Name, Value: "policy:" + p.Name})
		} else if p.Name == m.Required {
			failure = reasons
		}
	}
	evidence["boot_policies_passed"] = strings.Join(passed, ",")
	if failure != nil {
		return sels, fmt.Errorf("measured boot: boot policy %s: %s", m.Required, strings.Join(failure, "; "))
	}
	return sels, nil
}

// BootSelectors are the selectors a boot state gives: tpm:secureboot,
// tpm:firmware (when measured), tpm:kernel_cmdline_sha256 (when exactly one
// command line was measured).
func BootSelectors(st *verify.BootState) []attestors.Selector {
	sels := []attestors.Selector{{Type: Name, Value: "secureboot:" + strconv.FormatBool(st.SecureBoot)}}
	if st.Firmware != "" {
		sels = append(sels, attestors.Selector{Type: Name, Value: "firmware:" + st.Firmware})
	}
	if sum, ok := st.CmdlineSHA256(); ok {
		sels = append(sels, attestors.Selector{Type: Name, Value: "kernel_cmdline_sha256:" + sum})
	}
	return sels
}

// summarize adds the readable part of the boot state to evidence.
func summarize(st *verify.BootState, ev map[string]string) {
	ev["secure_boot"] = strconv.FormatBool(st.SecureBoot)
	if st.Firmware != "" {
		ev["firmware"] = st.Firmware
	}
	if st.Loader != "" {
		ev["loader"] = st.Loader
	}
	if st.Kernel != nil {
		ev["kernel"] = st.Kernel.Path + " " + st.Bank + ":" + st.Kernel.Digest
	}
	if len(st.KernelCmdlines) > 0 {
		ev["kernel_cmdline"] = strings.Join(st.KernelCmdlines, " | ")
	}
	ev["boot_apps"] = strconv.Itoa(len(st.BootApps))
	ev["boot_files"] = strconv.Itoa(len(st.Files))
	ev["dbx_hashes"] = strconv.Itoa(len(st.DBX))
	if len(st.Notes) > 0 {
		ev["boot_notes"] = strings.Join(st.Notes, "; ")
	}
}
