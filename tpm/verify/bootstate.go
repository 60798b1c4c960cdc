package verify

import (
	"bytes"
	"cmp"
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
	// firmware and shim started (PCR 4), in order: shim, the bootloader, and
	// a kernel or UKI loaded through them. Every PCR 4 measurement that is
	// not a bound action or separator is one, whatever type the log gives it.
	BootApps []string `json:"boot_apps,omitempty"`
	// Loader is the bootloader recognised from its measurements: "grub"
	// (PCR 8 and 9), "systemd-boot" (PCR 12, or PCR 8 before v250), or "".
	Loader string `json:"loader,omitempty"`
	// GrubCommands are the strings GRUB measured (PCR 8), in order, without
	// their labels (which are not measured).
	GrubCommands []string `json:"grub_commands,omitempty"`
	// Files are the files GRUB read (PCR 9), in order: the digest of each,
	// and the path the log gives it, which is not measured.
	Files []File `json:"files,omitempty"`
	// Kernel and Initrd are, for people, the kernel and initrd GRUB loaded
	// (the PCR 9 file the log names by the path of its one linux or initrd
	// command) or the UKI systemd-boot started (the last boot application).
	// No policy reads them: a path label is the log's word, and so is
	// which boot application was last. Policies check every file (boot_files)
	// and every boot application (boot_apps) instead.
	Kernel *File `json:"kernel,omitempty"`
	Initrd *File `json:"initrd,omitempty"`
	// KernelCmdlines are every kernel command line measured, in order:
	// the arguments of each linux command GRUB ran (PCR 8: the kernel path
	// and its arguments, as GRUB's kernel_cmdline repeats them), or
	// systemd's (PCR 12, or PCR 8 before v250). More than one means a boot
	// that loaded several kernels, or measurements added after boot; a
	// policy requires all of them to be allowed. None when they cannot be
	// known (a PCR 8 or 12 event whose data does not match its digest).
	KernelCmdlines []string `json:"kernel_cmdlines,omitempty"`
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
// digests themselves (boot applications, GRUB's files), or from the order of
// events on one PCR (which replay fixes). And since software running after
// boot can extend PCRs 0-15 too, a fact that can take several values is
// kept with all of them (boot applications, files, command lines) for a
// policy to allow every one, and the firmware's facts count only before
// their PCR's separator. Where the type is all there is to go on, the
// reading errs on the side that fails a requirement: every PCR 4 event that
// is not a bound action or separator counts as a boot application; any PCR
// 8 or 12 event that is not a bound string makes the command lines unknown;
// a PCR 7 event of a type that has no place there refuses the log. Events on
// other PCRs, or PCRs not replayed, are ignored.
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
	r := stateReader{st: st, bank: bank, separated: map[int]bool{}}
	for i := range l.Events {
		e := &l.Events[i]
		if e.Type == EvNoAction || !replayed.Has(bank, e.PCR) {
			continue
		}
		if r.separator(e) {
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
			if len(st.Files) == maxFiles {
				return nil, fail("event log", "more than %d files measured on PCR 9", maxFiles)
			}
			st.Files = append(st.Files, File{Path: cString(e.Data), Digest: hex.EncodeToString(e.Digest(bank))})
		case pcrSystemdCmd:
			r.systemdCmdline(e)
		}
		if err != nil {
			return nil, err
		}
	}
	r.finish()
	return st, nil
}

// maxFiles bounds the files a state records (GRUB reads a handful).
const maxFiles = 1024

// maxNotes bounds the notes a state records.
const maxNotes = 32

// stateReader carries what BootState gathers across events.
type stateReader struct {
	st   *BootState
	bank tpm2.TPMAlgID

	separated   map[int]bool // PCRs whose separator has been measured
	firmwares   []string
	grub        []string // bound GRUB strings, in order
	unbound     []string // PCR 8 and 12 events that are not bound strings
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
	switch n := len(r.st.Notes); {
	case n < maxNotes:
		r.st.Notes = append(r.st.Notes, fmt.Sprintf(format, args...))
	case n == maxNotes:
		r.st.Notes = append(r.st.Notes, "(more notes left out)")
	}
}

// separator reports whether e, on PCRs 0-7, is a separator, by its replayed
// digest (of 4 bytes of zeros, or of ones for an error), whatever data and
// type the log gives it: a separator dressed up as something else must still
// end its PCR's firmware facts. (An event that measured those 4 bytes for
// another reason counts as a separator too, which only fails closed.)
func (r *stateReader) separator(e *Event) bool {
	if e.PCR > pcrSecureBoot {
		return false
	}
	for _, v := range [][]byte{{0, 0, 0, 0}, {0xff, 0xff, 0xff, 0xff}} {
		if digestMatches(e, r.bank, v) {
			r.separated[e.PCR] = true
			return true
		}
	}
	return false
}

// firmware reads EV_S_CRTM_VERSION before PCR 0's separator. Some firmware
// measures something other than the version it logs (upstream go-tpm-tools
// refuses such logs); the version is then unknown, which fails any
// firmware requirement.
func (r *stateReader) firmware(e *Event) {
	if e.Type != EvSCRTMVersion {
		return
	}
	if r.separated[pcrFirmware] {
		r.note("event %d (%s) left out: measured after PCR 0's separator", e.Seq, e.Type)
		return
	}
	if why, ok := bound(e, e.Data, "firmware version"); !ok {
		r.note("firmware version unknown: %s", why)
		return
	}
	r.firmwares = append(r.firmwares, firmwareString(e.Data))
}

// bootApp reads PCR 4: everything but a bound action is a boot application,
// whatever type the log gives it. An action is a short printable string:
// an image (whose Authenticode hash is a plain hash of a byte stream anyone
// can compute) must not pass for one.
func (r *stateReader) bootApp(e *Event) {
	if e.Type == EvEFIAction && len(e.Data) <= 256 && printable(string(e.Data)) {
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
		return refuse("a separator whose digest is not a separator's")
	case EvEFIAction:
		if err := bindData(e, e.Data, "action"); err != nil {
			return err
		}
	case EvEFIVariableDriverConfig:
		if err := bindData(e, e.Data, "Secure Boot variable"); err != nil {
			return err
		}
		if r.separated[pcrSecureBoot] {
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
// or a systemd-boot command line; anything else makes the command lines
// unknown.
func (r *stateReader) grubString(e *Event) {
	if isUTF16(e.Data) {
		if _, ok := bound(e, e.Data, "kernel command line"); ok {
			r.pcr8 = append(r.pcr8, utf16String(e.Data))
			return
		}
	} else {
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
	}
	r.unbound = append(r.unbound, fmt.Sprintf("event %d (%s, PCR 8)", e.Seq, e.Type))
}

// systemdCmdline reads a PCR 12 event: a UTF-16LE command line systemd
// measured. Some systemd versions measure other things there (credentials,
// system extensions) under a name, not their content; the log cannot tell
// those from a command line whose data was rewritten, so they make the
// command lines unknown.
func (r *stateReader) systemdCmdline(e *Event) {
	if _, ok := bound(e, e.Data, "kernel command line"); ok && isUTF16(e.Data) {
		r.pcr12 = append(r.pcr12, utf16String(e.Data))
		return
	}
	r.unbound = append(r.unbound, fmt.Sprintf("event %d (%s, PCR %d)", e.Seq, e.Type, e.PCR))
}

// finish derives the firmware, loader, kernel and command lines from what
// was read.
func (r *stateReader) finish() {
	st := r.st
	// Without its separator, a PCR's firmware measurements cannot be told
	// from ones the OS added after boot.
	switch fw := slices.Compact(slices.Sorted(slices.Values(r.firmwares))); {
	case len(fw) > 0 && !r.separated[pcrFirmware]:
		r.note("firmware version unknown: PCR 0 has no separator")
	case len(fw) == 1:
		st.Firmware = fw[0]
	case len(fw) > 1:
		r.note("firmware version unknown: %d versions measured", len(fw))
	}
	if len(st.Variables) > 0 && !r.separated[pcrSecureBoot] {
		r.note("Secure Boot configuration unknown: PCR 7 has no separator")
		st.Variables, st.SecureBoot = nil, false
		st.PK, st.KEK, st.DB, st.DBHashes, st.DBX, st.DBXOther = nil, nil, nil, 0, nil, 0
	}
	var cmdlines []string
	if len(r.grub) > 0 {
		st.Loader = "grub"
		st.GrubCommands = r.grub
		cmdlines = r.grubKernel()
	}
	if sd := append(slices.Clone(r.pcr8), r.pcr12...); len(sd) > 0 {
		st.Loader = cmp.Or(st.Loader, "systemd-boot")
		if st.Loader != "systemd-boot" {
			st.Loader = ""
			r.note("loader unknown: both GRUB's and systemd's measurements")
		} else if len(st.BootApps) > 0 {
			st.Kernel = &File{Path: "(UKI)", Digest: st.BootApps[len(st.BootApps)-1]}
		}
		cmdlines = append(cmdlines, sd...)
	}
	if len(r.unbound) > 0 {
		r.note("kernel command lines unknown: %s (a string not measured as logged, or a loader whose command line is not read)", strings.Join(r.unbound, ", "))
		st.Kernel, st.Initrd = nil, nil
		return
	}
	st.KernelCmdlines = cmdlines
}

// grubKernel returns the command line of every linux command GRUB ran (its
// path and arguments, as GRUB's kernel_cmdline repeats them) and names, for
// people, the kernel and initrd of the last ones. A command negated with
// "!" still runs.
func (r *stateReader) grubKernel() []string {
	var cmdlines, linux, initrd []string
	for _, s := range r.grub {
		cmd := strings.TrimLeft(strings.TrimPrefix(strings.TrimLeft(s, " "), "!"), " ")
		word, args, _ := strings.Cut(cmd, " ")
		args = strings.TrimLeft(args, " ")
		switch word {
		case "linux", "linuxefi", "linux16":
			cmdlines = append(cmdlines, args)
			linux = append(linux, args)
		case "initrd", "initrdefi", "initrd16":
			initrd = append(initrd, args)
		case "chainloader", "multiboot", "multiboot2", "module", "module2", "kfreebsd", "knetbsd", "kopenbsd",
			"legacy_kernel", "xnu_kernel", "xnu_kernel64", "appleloader", "ntldr", "freedos", "plan9",
			"truecrypt", "pxechain", "xen_hypervisor", "xen_module", "rmmod":
			// A kernel loaded (or measurement turned off) by a command whose
			// command line is not read here.
			r.unbound = append(r.unbound, fmt.Sprintf("GRUB command %q", word))
		}
	}
	if len(linux) > 0 {
		r.st.Kernel = r.st.grubFile("kernel", firstWord(linux[len(linux)-1]), len(linux))
	}
	if len(initrd) > 0 {
		r.st.Initrd = r.st.grubFile("initrd", firstWord(initrd[len(initrd)-1]), len(initrd))
	}
	return cmdlines
}

func firstWord(s string) string {
	w, _, _ := strings.Cut(s, " ")
	return w
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

// grubFile names, for people, the PCR 9 file GRUB read for its one linux
// (or initrd) command: only when GRUB ran exactly one such command and
// exactly one file carries its path, since paths are not measured.
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
		st.Notes = append(st.Notes, fmt.Sprintf("%s not named: GRUB ran %d %s command(s) and %d file(s) carry the path %q; PCR 9 paths are not measured, so the %s is ambiguous",
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
