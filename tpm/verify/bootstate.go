package verify

import (
	"bytes"
	"encoding/hex"
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
	// Bank is the bank the digests below are in: sha256 when the log
	// carries it, else sha1.
	Bank string `json:"bank"`
	// PCRs are the quoted values of every PCR that replayed, by bank name
	// (sha1, sha256, …) and index, hex. Facts below come only from these.
	PCRs map[string]map[int]string `json:"pcrs"`

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
	_, ok := s.PCRs[s.Bank][pcr]
	return ok
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

// BootState reads the boot state from the events on PCRs in replayed,
// checking the data of every event a fact is read from against all of its
// digests. Events on other PCRs are ignored: nothing unproven reaches the
// state.
func (l *EventLog) BootState(replayed Replayed, quoted PCRValues) (*BootState, error) {
	bank := tpm2.TPMAlgSHA1
	if slices.Contains(l.Banks, tpm2.TPMAlgSHA256) {
		bank = tpm2.TPMAlgSHA256
	}
	st := &BootState{Bank: BankName(bank), PCRs: map[string]map[int]string{}}
	for alg, pcrs := range replayed {
		m := map[int]string{}
		for p := range pcrs {
			m[p] = hex.EncodeToString(quoted[alg][p])
		}
		st.PCRs[BankName(alg)] = m
	}
	if len(st.PCRs[st.Bank]) == 0 {
		return st, nil
	}
	var kernelPath, initrdPath string
	var linuxCmds, initrdCmds int
	var grubCmdline, sdCmdline *string
	afterSeparator := map[int]bool{}
	for i := range l.Events {
		e := &l.Events[i]
		if e.Type == EvNoAction || !replayed.Has(bank, e.PCR) {
			continue
		}
		if e.Type == EvSeparator {
			if err := bindData(e, e.Data, "separator"); err != nil {
				return nil, err
			}
			afterSeparator[e.PCR] = true
			continue
		}
		switch {
		case e.PCR == pcrFirmware && e.Type == EvSCRTMVersion:
			// Some firmware measures something other than the version string
			// it logs (upstream go-tpm-tools refuses such logs outright); the
			// version is then unknown, which fails any firmware requirement.
			if err := bindData(e, e.Data, "firmware version"); err != nil {
				st.Notes = append(st.Notes, "firmware version unknown: "+err.(*Error).Reason)
				continue
			}
			st.Firmware = firmwareString(e.Data)
		case e.PCR == pcrSecureBoot && e.Type == EvEFIVariableDriverConfig:
			if err := bindData(e, e.Data, "Secure Boot variable"); err != nil {
				return nil, err
			}
			if afterSeparator[e.PCR] {
				return nil, fail("event log", "event %d (%s, PCR 7): Secure Boot configuration measured after the separator", e.Seq, e.Type)
			}
			if err := st.readSecureBootVariable(e); err != nil {
				return nil, err
			}
		case e.PCR == pcrSecureBoot && e.Type == EvEFIVariableAuthority:
			// Older shims log their vendor certificate with lengths that do not
			// match what they measured: such an authority is left out, and
			// noted. No policy requirement reads authorities; they are shown.
			if err := bindData(e, e.Data, "authority"); err != nil {
				st.Notes = append(st.Notes, "authority left out: "+err.(*Error).Reason)
				continue
			}
			v, err := parseVariable(e.Data)
			if err != nil {
				st.Notes = append(st.Notes, fmt.Sprintf("authority left out: event %d: %s", e.Seq, err))
				continue
			}
			if der, ok := authorityCert(v.Data); ok {
				st.Authorities = append(st.Authorities, Authority{Variable: v.Name, Cert: newCert(der)})
			}
		case e.PCR == pcrBootApps && e.Type == EvEFIBootServicesApp:
			// The digest is the image's Authenticode hash; the event data (a
			// load address and device path) is not what was measured, so the
			// digest itself, replayed, is the fact.
			st.BootApps = append(st.BootApps, hex.EncodeToString(e.Digest(bank)))
		case e.PCR == pcrGrubCmds && e.Type == EvIPL && isUTF16(e.Data):
			// systemd-boot before v250 measured the command line of the
			// entry it booted into PCR 8, as UTF-16LE; some versions log text
			// that is not what they measured, which is then left out (and a
			// command-line requirement fails).
			if err := bindData(e, e.Data, "kernel command line"); err != nil {
				st.Notes = append(st.Notes, "kernel command line left out: "+err.(*Error).Reason)
				continue
			}
			s := utf16String(e.Data)
			sdCmdline = &s
		case e.PCR == pcrGrubCmds && e.Type == EvIPL:
			s := cString(e.Data)
			// Upstream GRUB 2.04+ prefixes, and Red Hat's GRUB's.
			for _, p := range []string{"grub_cmd: ", "kernel_cmdline: ", "module_cmdline: ", "grub_cmd ", "grub_kernel_cmdline "} {
				rest, ok := strings.CutPrefix(s, p)
				if !ok {
					continue
				}
				// GRUB measures the string after its prefix; the event data is
				// the prefixed string (NUL-terminated). Red Hat's GRUB measures
				// the NUL too.
				if err := bindData(e, []byte(rest), "GRUB string"); err != nil {
					if bindData(e, []byte(rest+"\x00"), "GRUB string") != nil {
						return nil, err
					}
				}
				st.Loader = "grub"
				switch p {
				case "grub_cmd: ", "grub_cmd ":
					st.GrubCommands = append(st.GrubCommands, rest)
					if f := strings.Fields(rest); len(f) >= 2 {
						switch f[0] {
						case "linux", "linuxefi", "linux16":
							kernelPath = f[1]
							linuxCmds++
						case "initrd", "initrdefi", "initrd16":
							initrdPath = f[1]
							initrdCmds++
						}
					}
				case "kernel_cmdline: ", "grub_kernel_cmdline ":
					grubCmdline = &rest
				}
			}
		case e.PCR == pcrGrubFiles && e.Type == EvIPL:
			// GRUB measures a file's contents; the event data is its path (Red
			// Hat's GRUB writes "grub_linuxefi Kernel" for the kernel instead).
			path := cString(e.Data)
			switch path {
			case "grub_linuxefi Kernel":
				path = kernelPath
			case "grub_linuxefi Initrd":
				path = initrdPath
			}
			st.Files = append(st.Files, File{Path: path, Digest: hex.EncodeToString(e.Digest(bank))})
		case e.PCR == pcrSystemdCmd && e.Type == EvIPL:
			if err := bindData(e, e.Data, "kernel command line"); err != nil {
				return nil, err
			}
			s := utf16String(e.Data)
			sdCmdline = &s
		}
	}
	switch {
	case grubCmdline != nil:
		st.KernelCmdline, st.CmdlineMeasured = *grubCmdline, true
	case sdCmdline != nil:
		st.KernelCmdline, st.CmdlineMeasured = *sdCmdline, true
		st.Loader = "systemd-boot"
	}
	if st.Loader == "grub" {
		st.Kernel = st.grubFile("kernel", kernelPath, linuxCmds)
		st.Initrd = st.grubFile("initrd", initrdPath, initrdCmds)
	} else if st.Loader == "systemd-boot" && len(st.BootApps) > 0 {
		st.Kernel = &File{Path: "(UKI)", Digest: st.BootApps[len(st.BootApps)-1]}
	}
	return st, nil
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
		st.SecureBoot = len(v.Data) == 1 && v.Data[0] == 1
	case v.GUID == efiGlobalVariable && (v.Name == "PK" || v.Name == "KEK"),
		v.GUID == efiImageSecurityDB && (v.Name == "db" || v.Name == "dbx"):
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
	var found []File
	for _, f := range st.Files {
		if f.Path == path || strings.HasSuffix(f.Path, ")"+path) {
			found = append(found, f)
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
	return slices.Sorted(maps.Keys(s.PCRs[s.Bank]))
}
