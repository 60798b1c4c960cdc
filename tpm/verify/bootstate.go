package verify

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/google/go-tpm/tpm2"
)

// BootState is what a replayed event log proves a machine booted. It holds
// only facts read from events on PCRs that replayed to a verified quote and,
// for every event whose content a fact comes from, whose data hashes to its
// digest in every bank. It is plain data: stored as attestation evidence,
// evaluated by a Policy, shown to operators.
type BootState struct {
	// Bank is the bank the digests below are in: sha256 when it replayed,
	// else sha1.
	Bank string `json:"bank"`
	// PCRs are the quoted values, by bank name (sha1, sha256, …) and index,
	// hex: the TPM's word, through a verified quote.
	PCRs map[string]map[int]string `json:"pcrs"`
	// Replayed are the PCRs, by bank, the event log was proven against.
	// Facts below come only from events on these, in Bank.
	Replayed map[string][]int `json:"replayed"`
	// Variables are the Secure Boot variables measured (SecureBoot, PK,
	// KEK, db, dbx), each once.
	Variables []string `json:"variables,omitempty"`

	// Firmware is the platform firmware version (EV_S_CRTM_VERSION, PCR 0).
	Firmware string `json:"firmware,omitempty"`
	// SecureBoot is true only when the SecureBoot variable was measured (PCR
	// 7) and is 1. A log with no SecureBoot variable says false.
	SecureBoot bool   `json:"secure_boot"`
	PK         []Cert `json:"pk,omitempty"`
	KEK        []Cert `json:"kek,omitempty"`
	DB         []Cert `json:"db,omitempty"`
	DBHashes   int    `json:"db_hashes,omitempty"`
	// DBX holds the SHA-256 hashes in dbx, hex; DBXOther counts its other
	// entries (certificates, SHA-1 …).
	DBX      []string `json:"dbx,omitempty"`
	DBXOther int      `json:"dbx_other,omitempty"`
	// Authorities are the certificates that verified boot applications
	// (EV_EFI_VARIABLE_AUTHORITY, PCR 7), in order.
	Authorities []Authority `json:"authorities,omitempty"`
	// BootApps are the Authenticode digests of the EFI applications the
	// firmware and shim started (EV_EFI_BOOT_SERVICES_APPLICATION, PCR 4), in
	// order: shim, the bootloader, and a kernel or UKI loaded through them.
	BootApps []string `json:"boot_apps,omitempty"`
	// Loader is the bootloader recognised from its measurements: "grub"
	// (PCR 8 and 9), "systemd-boot" (PCR 12) or "".
	Loader string `json:"loader,omitempty"`
	// GrubCommands are the commands GRUB ran (PCR 8), in order.
	GrubCommands []string `json:"grub_commands,omitempty"`
	// Files are the files GRUB read (PCR 9): path and digest, in order.
	Files []File `json:"files,omitempty"`
	// Kernel and Initrd are the kernel and initrd GRUB loaded (from PCR 9,
	// named by its linux and initrd commands) or, under systemd-boot, the
	// UKI (the last boot application). Caveat: under GRUB the file is found
	// by the path the log labels it with, which the TPM does not measure;
	// see grubFile for how that is kept from being abused. A policy that
	// must hold against a rewritten boot configuration also pins
	// kernel_cmdlines (measured) or PCR 9 itself.
	Kernel *File `json:"kernel,omitempty"`
	Initrd *File `json:"initrd,omitempty"`
	// KernelCmdline is the kernel command line as measured: GRUB's
	// kernel_cmdline (which begins with the kernel path) or systemd-stub's
	// (PCR 12). "" when not measured.
	KernelCmdline string `json:"kernel_cmdline,omitempty"`
	// CmdlineMeasured is true when a kernel command line was measured (it
	// may be empty).
	CmdlineMeasured bool `json:"cmdline_measured,omitempty"`
	// Notes say what was left out of the state and why (an informational
	// event whose data does not match its digest).
	Notes []string `json:"notes,omitempty"`
}

// Authority is a certificate that verified a boot application, and the
// variable it came from (db, MokList, Shim …).
type Authority struct {
	Variable string `json:"variable"`
	Cert
}

// File is a file measured by the bootloader.
type File struct {
	Path   string `json:"path"`
	Digest string `json:"digest"`
}

// The PCRs the boot state reads (TCG PC Client PFP; GRUB; systemd-stub).
const (
	pcrFirmware   = 0
	pcrBootApps   = 4
	pcrSecureBoot = 7
	pcrGrubCmds   = 8
	pcrGrubFiles  = 9
	pcrSystemdCmd = 12
)

// BankName is the lowercase name of a PCR bank (sha1, sha256, sha384,
// sha512), as configuration and selectors write it.
func BankName(alg tpm2.TPMAlgID) string {
	switch alg {
	case tpm2.TPMAlgSHA1:
		return "sha1"
	case tpm2.TPMAlgSHA256:
		return "sha256"
	case tpm2.TPMAlgSHA384:
		return "sha384"
	case tpm2.TPMAlgSHA512:
		return "sha512"
	}
	return fmt.Sprintf("alg%d", uint16(alg))
}

// BankNames is BankName of each of banks.
func BankNames(banks []tpm2.TPMAlgID) []string {
	out := make([]string, len(banks))
	for i, b := range banks {
		out[i] = BankName(b)
	}
	return out
}

// ParseBank is the inverse of BankName.
func ParseBank(s string) (tpm2.TPMAlgID, bool) {
	for _, a := range []tpm2.TPMAlgID{tpm2.TPMAlgSHA1, tpm2.TPMAlgSHA256, tpm2.TPMAlgSHA384, tpm2.TPMAlgSHA512} {
		if BankName(a) == s {
			return a, true
		}
	}
	return 0, false
}

// Proven reports whether pcr replayed in the state's digest bank.
func (s *BootState) Proven(pcr int) bool {
	return slices.Contains(s.Replayed[s.Bank], pcr)
}

// VerifyEventLog parses raw, replays it against the PCR values of a verified
// quote (see EventLog.Replay) and reads the boot state from the events that
// replayed.
func VerifyEventLog(raw []byte, quoted PCRValues) (*EventLog, *BootState, error) {
	log, err := ParseEventLog(raw)
	if err != nil {
		return nil, nil, err
	}
	replayed, err := log.Replay(quoted)
	if err != nil {
		return nil, nil, err
	}
	st, err := log.BootState(replayed, quoted)
	if err != nil {
		return nil, nil, err
	}
	return log, st, nil
}

// BootState reads the boot state from the events on PCRs in replayed.
//
// The TPM measured digests, and replay proves only them: an event's type,
// and its data unless it hashes to its digest, are the log's word. So no
// fact is read from a type or a label alone. Facts come from data that
// hashes to the event's digest in every bank (the Secure Boot variables, the
// separators, GRUB's strings, systemd's command line), from the replayed
// digests themselves (boot applications, GRUB's files), or from their order
// on one PCR (which replay fixes). Where the type is all there is to go on,
// the reading errs on the side that fails a requirement: every PCR 4 event
// that is not a bound action or separator counts as a boot application;
// any event on PCR 8 that is not a bound string makes the GRUB facts
// unknown; a PCR 7 event of a type that has no place there refuses the log.
// Events on other PCRs, or PCRs not replayed, are ignored.
func (l *EventLog) BootState(replayed Replayed, quoted PCRValues) (*BootState, error) {
	bank := tpm2.TPMAlgSHA1
	if len(replayed[tpm2.TPMAlgSHA256]) > 0 {
		bank = tpm2.TPMAlgSHA256
	}
	st := &BootState{Bank: BankName(bank), PCRs: map[string]map[int]string{}, Replayed: map[string][]int{}}
	for alg, vals := range quoted {
		m := map[int]string{}
		for p, v := range vals {
			m[p] = hex.EncodeToString(v)
		}
		st.PCRs[BankName(alg)] = m
	}
	for alg, pcrs := range replayed {
		st.Replayed[BankName(alg)] = slices.Sorted(maps.Keys(pcrs))
	}
	r := stateReader{st: st, bank: bank}
	for i := range l.Events {
		e := &l.Events[i]
		if e.Type == EvNoAction || !replayed.Has(bank, e.PCR) {
			continue
		}
		var err error
		switch e.PCR {
		case pcrFirmware:
			r.firmware(e)
		case pcrBootApps:
			r.bootApp(e)
		case pcrSecureBoot:
			err = r.secureBoot(e)
		case pcrGrubCmds:
			r.grubString(e)
		case pcrGrubFiles:
			// GRUB measures a file's contents; the event data is its path,
			// which nothing measured (Red Hat's GRUB writes "grub_linuxefi
			// Kernel" instead).
			st.Files = append(st.Files, File{Path: cString(e.Data), Digest: hex.EncodeToString(e.Digest(bank))})
		case pcrSystemdCmd:
			r.systemdCmdline(e, &r.pcr12)
		}
		if err != nil {
			return nil, err
		}
	}
	r.finish()
	return st, nil
}

// stateReader carries what BootState gathers across events.
type stateReader struct {
	st   *BootState
	bank tpm2.TPMAlgID

	firmwares   []string
	sbSeparator bool
	grub        []string // bound GRUB strings, in order
	grubUnbound []string // notes on PCR 8 events that are not
	pcr8, pcr12 []string // bound systemd command lines (PCR 8 before v250, PCR 12)
}

// bound reports whether m is what e measured in every bank it carries, and
// if not, why (for a note).
func bound(e *Event, m []byte, what string) (string, bool) {
	if err := bindData(e, m, what); err != nil {
		return err.Reason, false
	}
	return "", true
}

func (r *stateReader) note(format string, args ...any) {
	r.st.Notes = append(r.st.Notes, fmt.Sprintf(format, args...))
}

// firmware reads EV_S_CRTM_VERSION. Some firmware measures something other
// than the version it logs (upstream go-tpm-tools refuses such logs); the
// version is then unknown, which fails any firmware requirement.
func (r *stateReader) firmware(e *Event) {
	if e.Type != EvSCRTMVersion {
		return
	}
	if why, ok := bound(e, e.Data, "firmware version"); !ok {
		r.note("firmware version unknown: %s", why)
		return
	}
	r.firmwares = append(r.firmwares, firmwareString(e.Data))
}

// bootApp reads PCR 4: everything but a bound action or separator is a
// boot application, whatever type the log gives it.
func (r *stateReader) bootApp(e *Event) {
	if e.Type == EvEFIAction || e.Type == EvSeparator {
		if _, ok := bound(e, e.Data, "action"); ok {
			return
		}
	}
	// The digest is the image's Authenticode hash: the event data (a load
	// address and device path) is not what was measured; the digest,
	// replayed, is the fact.
	r.st.BootApps = append(r.st.BootApps, hex.EncodeToString(e.Digest(r.bank)))
}

// secureBoot reads PCR 7: the Secure Boot variables before its separator,
// the authorities after it.
func (r *stateReader) secureBoot(e *Event) error {
	refuse := func(format string, args ...any) error {
		return fail("event log", "event %d (%s, PCR 7): %s", e.Seq, e.Type, fmt.Sprintf(format, args...))
	}
	switch e.Type {
	case EvSeparator:
		if err := bindData(e, e.Data, "separator"); err != nil {
			return err
		}
		if len(e.Data) != 4 {
			return refuse("a separator of %d bytes", len(e.Data))
		}
		r.sbSeparator = true
	case EvEFIAction:
		if err := bindData(e, e.Data, "action"); err != nil {
			return err
		}
	case EvEFIVariableDriverConfig:
		if err := bindData(e, e.Data, "Secure Boot variable"); err != nil {
			return err
		}
		if r.sbSeparator {
			return refuse("Secure Boot configuration measured after the separator")
		}
		return r.st.readSecureBootVariable(e)
	case EvEFIVariableAuthority:
		// Older shims log their vendor certificate with lengths that do not
		// match what they measured: such an authority is left out, and
		// noted. No policy requirement reads authorities; they are shown.
		if why, ok := bound(e, e.Data, "authority"); !ok {
			r.note("authority left out: %s", why)
			return nil
		}
		v, err := parseVariable(e.Data)
		if err != nil {
			r.note("authority left out: event %d: %s", e.Seq, err)
			return nil
		}
		if der, ok := authorityCert(v.Data); ok {
			r.st.Authorities = append(r.st.Authorities, Authority{Variable: v.Name, Cert: newCert(der)})
		}
	default:
		// A type that has no place on PCR 7 hides what the event was: a
		// retyped Secure Boot variable must not vanish from the state.
		return refuse("an event of this type has no place on PCR 7")
	}
	return nil
}

// grubPrefixes are the labels GRUB puts before the strings it measures
// (upstream 2.04+, then Red Hat's). The label is not measured: a string is
// classified by what it says, never by its label.
var grubPrefixes = []string{"grub_cmd: ", "kernel_cmdline: ", "module_cmdline: ", "grub_cmd ", "grub_kernel_cmdline "}

// grubString reads a PCR 8 event of any type: a GRUB string whose text (with
// or without its NUL, as Red Hat's GRUB measures it) is what was measured,
// or a systemd-boot command line; anything else makes GRUB's facts unknown.
func (r *stateReader) grubString(e *Event) {
	if isUTF16(e.Data) {
		if _, ok := bound(e, e.Data, "kernel command line"); ok {
			r.pcr8 = append(r.pcr8, utf16String(e.Data))
			return
		}
		// Not noted as systemd's: rewritten data could hide a GRUB command
		// this way, so it counts against GRUB's facts below.
	}
	s := cString(e.Data)
	for _, p := range grubPrefixes {
		text, ok := strings.CutPrefix(s, p)
		if !ok {
			continue
		}
		_, ok = bound(e, []byte(text), "GRUB string")
		if !ok {
			_, ok = bound(e, []byte(text+"\x00"), "GRUB string")
		}
		if ok {
			r.grub = append(r.grub, text)
			return
		}
	}
	r.grubUnbound = append(r.grubUnbound, fmt.Sprintf("event %d (%s)", e.Seq, e.Type))
}

// systemdCmdline reads a UTF-16LE command line systemd measured.
// Some systemd versions log other measurements there (credentials, system
// extensions) under a name, not their content: those are left out.
func (r *stateReader) systemdCmdline(e *Event, into *[]string) {
	if _, ok := bound(e, e.Data, "kernel command line"); ok && isUTF16(e.Data) {
		*into = append(*into, utf16String(e.Data))
		return
	}
	r.note("PCR %d event %d (%s) left out: it is not a command line whose data matches its digest", e.PCR, e.Seq, e.Type)
}

// finish derives the loader, kernel and command line from what was read.
func (r *stateReader) finish() {
	st := r.st
	switch fw := slices.Compact(slices.Sorted(slices.Values(r.firmwares))); {
	case len(fw) == 1:
		st.Firmware = fw[0]
	case len(fw) > 1:
		r.note("firmware version unknown: %d versions measured", len(fw))
	}
	if len(r.grubUnbound) > 0 {
		r.note("PCR 8 holds %s, whose data does not match its digest: the kernel and command line the bootloader measured there are unknown", strings.Join(r.grubUnbound, ", "))
	}
	switch {
	case len(r.grub) > 0:
		st.Loader = "grub"
		st.GrubCommands = r.grub
		if len(r.grubUnbound) == 0 {
			r.grubKernel()
		}
	case len(r.pcr12) > 0 || len(r.pcr8) > 0:
		st.Loader = "systemd-boot"
		lines := r.pcr12
		if len(lines) == 0 {
			lines = r.pcr8
		}
		if len(lines) != 1 {
			r.note("kernel command line unknown: %d command lines measured", len(lines))
			return
		}
		st.KernelCmdline, st.CmdlineMeasured = lines[0], true
		if len(st.BootApps) > 0 {
			// The UKI is the last image started, which PCR 4's order fixes.
			st.Kernel = &File{Path: "(UKI)", Digest: st.BootApps[len(st.BootApps)-1]}
		}
	}
}

// grubKernel reads the kernel, initrd and command line of GRUB's last linux
// command. The command line is the command's own measured text (its path and
// arguments, as GRUB's kernel_cmdline repeats them), so no label decides it.
func (r *stateReader) grubKernel() {
	var linux, initrd []string
	for _, s := range r.grub {
		f := strings.Fields(s)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "linux", "linuxefi", "linux16":
			linux = append(linux, s)
		case "initrd", "initrdefi", "initrd16":
			initrd = append(initrd, s)
		}
	}
	if len(linux) == 0 {
		return
	}
	last := linux[len(linux)-1]
	_, args, _ := strings.Cut(last, " ")
	r.st.KernelCmdline, r.st.CmdlineMeasured = strings.TrimLeft(args, " "), true
	r.st.Kernel = r.st.grubFile("kernel", strings.Fields(last)[1], len(linux))
	if len(initrd) > 0 {
		r.st.Initrd = r.st.grubFile("initrd", strings.Fields(initrd[len(initrd)-1])[1], len(initrd))
	}
}

// readSecureBootVariable records one EV_EFI_VARIABLE_DRIVER_CONFIG.
func (st *BootState) readSecureBootVariable(e *Event) error {
	v, err := parseVariable(e.Data)
	if err != nil {
		return fail("event log", "event %d (%s, PCR 7): %s", e.Seq, e.Type, err)
	}
	bad := func(err error) error {
		return fail("event log", "event %d (%s, PCR 7): variable %s: %s", e.Seq, e.Type, v.Name, err)
	}
	switch {
	case v.GUID == efiGlobalVariable && v.Name == "SecureBoot":
		if slices.Contains(st.Variables, v.Name) {
			return bad(errors.New("measured twice"))
		}
		st.Variables = append(st.Variables, v.Name)
		st.SecureBoot = len(v.Data) == 1 && v.Data[0] == 1
	case v.GUID == efiGlobalVariable && (v.Name == "PK" || v.Name == "KEK"),
		v.GUID == efiImageSecurityDB && (v.Name == "db" || v.Name == "dbx"):
		if slices.Contains(st.Variables, v.Name) {
			return bad(errors.New("measured twice"))
		}
		st.Variables = append(st.Variables, v.Name)
		db, err := parseSignatureDB(v.Data)
		if err != nil {
			return bad(err)
		}
		switch v.Name {
		case "PK":
			st.PK = db.Certs
		case "KEK":
			st.KEK = db.Certs
		case "db":
			st.DB, st.DBHashes = db.Certs, len(db.Hashes)
		case "dbx":
			st.DBX, st.DBXOther = db.Hashes, db.Other+len(db.Certs)
		}
	}
	return nil
}

// isUTF16 reports whether b looks like UTF-16LE text (as systemd writes),
// not like GRUB's ASCII.
func isUTF16(b []byte) bool {
	return len(b) >= 4 && b[0] != 0 && b[1] == 0 && b[3] == 0
}

// grubFile finds the PCR 9 file GRUB read for its one linux (or initrd)
// command. The TPM measures a file's contents, not the path the log labels
// it with, so the label is the log's word: the file is named only when GRUB
// ran exactly one such command and exactly one file carries its path.
// Otherwise a rewritten log could swap the labels of two files GRUB read (a
// second linux command, say) and pass an allowed kernel's digest off as the
// one that booted; the kernel is then left unknown, and noted.
func (st *BootState) grubFile(what, path string, commands int) *File {
	if commands == 0 {
		return nil
	}
	redHat := map[string]string{"kernel": "grub_linuxefi Kernel", "initrd": "grub_linuxefi Initrd"}[what]
	var found []File
	for _, f := range st.Files {
		if f.Path == path || strings.HasSuffix(f.Path, ")"+path) || f.Path == redHat {
			found = append(found, File{Path: path, Digest: f.Digest})
		}
	}
	if commands != 1 || len(found) != 1 {
		st.Notes = append(st.Notes, fmt.Sprintf("%s left out: GRUB ran %d %s command(s) and %d file(s) carry the path %q; PCR 9 paths are not measured, so the %s is ambiguous",
			what, commands, what, len(found), path, what))
		return nil
	}
	return &found[0]
}

// cString is b up to its first NUL.
func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// firmwareString reads an S-CRTM version: UTF-16LE as UEFI firmware writes
// it, else ASCII, else hex.
func firmwareString(b []byte) string {
	if len(b) >= 2 && len(b)%2 == 0 && b[1] == 0 {
		if s := utf16String(b); printable(s) {
			return s
		}
	}
	if s := cString(b); s != "" && printable(s) {
		return s
	}
	return hex.EncodeToString(b)
}

func printable(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == 0xfffd {
			return false
		}
	}
	return true
}

// PCRList is the PCRs a state proves in its bank, ascending.
func (s *BootState) PCRList() []int {
	return s.Replayed[s.Bank]
}
