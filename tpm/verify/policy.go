package verify

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
)

// Policy is a named measured-boot policy: requirements every boot must meet
// and, when it has any, reference sets of which at least one must match as
// well. Reference sets let a fleet move from one firmware or kernel to the
// next: the old and the new set are both allowed until the roll is over.
//
// A policy only passes on facts a BootState proves. A requirement on a fact
// whose PCR was not quoted fails, saying which PCR is missing; a
// requirement on something the log did not measure fails too. There is no
// requirement that passes for want of evidence.
type Policy struct {
	Name string
	Requirements
	References []Reference
}

// Reference is one allowed reference set of a policy.
type Reference struct {
	Name string
	Requirements
}

// Requirements are the checks of a policy or a reference set. A zero field
// checks nothing. Digests and fingerprints are lowercase hex; digests are in
// the boot state's bank (sha256 when the log carries it).
type Requirements struct {
	SecureBoot *bool // the SecureBoot variable measured as this
	// PK, KEK and DB restrict the Secure Boot databases by certificate
	// fingerprint (SHA-256 of the DER).
	PK, KEK, DB CertRule
	// DBXContains are SHA-256 hashes dbx must contain (revocations that must
	// be in place).
	DBXContains []string
	Firmware    []string // allowed firmware versions (EV_S_CRTM_VERSION)
	// BootApps are allowed boot application digests (PCR 4: shim, the
	// bootloader, a UKI): every one started must be listed.
	BootApps []string
	// BootFiles are allowed digests of the files the bootloader read (GRUB,
	// PCR 9: the kernel, the initrd, grub.cfg …): every one must be listed.
	BootFiles []string
	// Cmdlines are allowed kernel command lines, exactly as measured: every
	// one measured must be listed.
	Cmdlines []string
	PCRs     []PCRValue
}

// CertRule restricts a Secure Boot database: with Allowed set, every
// certificate in it must be listed; none may be in Forbidden.
type CertRule struct {
	Allowed, Forbidden []string
}

// PCRValue is an exact PCR value a policy requires.
type PCRValue struct {
	Bank  string // sha1, sha256, …
	Index int
	Value string // hex
}

func (v PCRValue) String() string { return fmt.Sprintf("%s:%d:%s", v.Bank, v.Index, v.Value) }

var policyName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// Validate checks the policy is well formed: a name usable in a selector,
// hex where hex is due, known banks.
func (p *Policy) Validate() error {
	if !policyName.MatchString(p.Name) {
		return fmt.Errorf("policy name %q: use letters, digits, '.', '_' and '-' (it becomes the selector tpm:policy:%s)", p.Name, p.Name)
	}
	if err := p.Requirements.validate(); err != nil {
		return fmt.Errorf("policy %s: %w", p.Name, err)
	}
	if p.Requirements.empty() && len(p.References) == 0 {
		return fmt.Errorf("policy %s requires nothing, so every boot would pass it; there is no accept-all policy", p.Name)
	}
	if err := p.Requirements.needsBootPath(nil); err != nil {
		return fmt.Errorf("policy %s: %w", p.Name, err)
	}
	seen := map[string]bool{}
	for _, r := range p.References {
		if err := p.Requirements.needsBootPath(&r.Requirements); err != nil {
			return fmt.Errorf("policy %s: reference %s: %w", p.Name, r.Name, err)
		}
		if r.Name == "" || seen[r.Name] {
			return fmt.Errorf("policy %s: reference names must be set and distinct (%q)", p.Name, r.Name)
		}
		seen[r.Name] = true
		if err := r.Requirements.validate(); err != nil {
			return fmt.Errorf("policy %s: reference %s: %w", p.Name, r.Name, err)
		}
		if r.Requirements.empty() {
			return fmt.Errorf("policy %s: reference %s requires nothing, so every boot would match it", p.Name, r.Name)
		}
	}
	return nil
}

func (r *Requirements) validate() error {
	hexes := map[string][]string{
		"pk_allowed": r.PK.Allowed, "pk_forbidden": r.PK.Forbidden, "kek_allowed": r.KEK.Allowed,
		"kek_forbidden": r.KEK.Forbidden, "db_allowed": r.DB.Allowed, "db_forbidden": r.DB.Forbidden,
		"dbx_contains": r.DBXContains, "boot_apps": r.BootApps, "boot_files": r.BootFiles,
	}
	for _, k := range slices.Sorted(maps.Keys(hexes)) {
		for _, h := range hexes[k] {
			if b, err := hex.DecodeString(h); err != nil || len(b) < 20 || h != strings.ToLower(h) {
				return fmt.Errorf("%s: %q is not a lowercase hex digest", k, h)
			}
		}
	}
	for _, v := range r.PCRs {
		if _, ok := ParseBank(v.Bank); !ok {
			return fmt.Errorf("pcrs: unknown bank %q in %s", v.Bank, v)
		}
		if v.Index < 0 || v.Index > 23 {
			return fmt.Errorf("pcrs: PCR %d is out of range", v.Index)
		}
		if _, err := hex.DecodeString(v.Value); err != nil || v.Value != strings.ToLower(v.Value) {
			return fmt.Errorf("pcrs: %q is not lowercase hex", v.Value)
		}
	}
	return nil
}

// NeededPCRs are the PCRs the policy reads; a quote must cover them (in every
// bank) for the policy to be able to pass.
func (p *Policy) NeededPCRs() []int {
	set := map[int]bool{}
	for _, r := range append([]Requirements{p.Requirements}, refReqs(p.References)...) {
		for _, n := range r.pcrs() {
			set[n] = true
		}
	}
	var out []int
	for n := range set {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

func refReqs(refs []Reference) []Requirements {
	out := make([]Requirements, len(refs))
	for i, r := range refs {
		out[i] = r.Requirements
	}
	return out
}

func (r *Requirements) pcrs() []int {
	var out []int
	if r.SecureBoot != nil || r.PK.set() || r.KEK.set() || r.DB.set() || len(r.DBXContains) > 0 {
		out = append(out, pcrSecureBoot)
	}
	if len(r.Firmware) > 0 {
		out = append(out, pcrFirmware)
	}
	if len(r.BootApps) > 0 {
		out = append(out, pcrBootApps)
	}
	if len(r.BootFiles) > 0 {
		out = append(out, pcrGrubFiles)
	}
	if len(r.Cmdlines) > 0 {
		out = append(out, pcrGrubCmds, pcrSystemdCmd)
	}
	for _, v := range r.PCRs {
		out = append(out, v.Index)
	}
	return out
}

// needsBootPath refuses kernel_cmdlines or boot_files without boot_apps in
// the same policy (r) or reference (ref): they say what the bootloader
// measured, and only a pinned boot path says that the bootloader that
// measures them ran; otherwise the OS could measure allowed values later.
func (r *Requirements) needsBootPath(ref *Requirements) error {
	has := func(f func(q *Requirements) bool) bool { return f(r) || (ref != nil && f(ref)) }
	if has(func(q *Requirements) bool { return len(q.BootApps) > 0 }) {
		return nil
	}
	own := r
	if ref != nil {
		own = ref
	}
	switch {
	case len(own.Cmdlines) > 0:
		return errors.New("kernel_cmdlines needs boot_apps beside it (in the policy or the reference): without a pinned boot path, the OS could measure an allowed command line after boot")
	case len(own.BootFiles) > 0:
		return errors.New("boot_files needs boot_apps beside it (in the policy or the reference): without a pinned boot path, the OS could measure allowed files after boot")
	}
	return nil
}

// empty reports whether r checks nothing.
func (r *Requirements) empty() bool { return len(r.pcrs()) == 0 }

func (c CertRule) set() bool { return len(c.Allowed) > 0 || len(c.Forbidden) > 0 }

// Evaluate checks s against the policy and returns why it fails, one reason
// per failed requirement; none means it passes.
func (p *Policy) Evaluate(s *BootState) []string {
	if reasons := p.Requirements.check(s); len(reasons) > 0 {
		return reasons
	}
	if len(p.References) == 0 {
		return nil
	}
	var reasons []string
	for _, r := range p.References {
		fails := r.Requirements.check(s)
		if len(fails) == 0 {
			return nil
		}
		reasons = append(reasons, fmt.Sprintf("reference %s: %s", r.Name, strings.Join(fails, "; ")))
	}
	return append([]string{"no reference set matches"}, reasons...)
}

func (r *Requirements) check(s *BootState) []string {
	var out []string
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	need := func(pcr int, what string) bool {
		if s.Proven(pcr) {
			return true
		}
		add("%s: PCR %d (%s) is not in the quote", what, pcr, s.Bank)
		return false
	}
	measured := func(name string) bool {
		if slices.Contains(s.Variables, name) {
			return true
		}
		add("%s: the variable was not measured", name)
		return false
	}
	if r.SecureBoot != nil && need(pcrSecureBoot, "secure_boot") && measured("SecureBoot") && s.SecureBoot != *r.SecureBoot {
		add("Secure Boot is %s, the policy requires %s", onOff(s.SecureBoot), onOff(*r.SecureBoot))
	}
	for _, db := range []struct {
		name  string
		rule  CertRule
		certs []Cert
	}{{"PK", r.PK, s.PK}, {"KEK", r.KEK, s.KEK}, {"db", r.DB, s.DB}} {
		if !db.rule.set() || !need(pcrSecureBoot, strings.ToLower(db.name)) || !measured(db.name) {
			continue
		}
		if len(db.rule.Allowed) > 0 && len(db.certs) == 0 {
			add("%s: no certificate was measured", db.name)
		}
		for _, c := range db.certs {
			if len(db.rule.Allowed) > 0 && !slices.Contains(db.rule.Allowed, c.SHA256) {
				add("%s: certificate %s is not allowed", db.name, c)
			}
			if slices.Contains(db.rule.Forbidden, c.SHA256) {
				add("%s: certificate %s is forbidden", db.name, c)
			}
		}
	}
	if len(r.DBXContains) > 0 && need(pcrSecureBoot, "dbx_contains") && measured("dbx") {
		var missing []string
		for _, h := range r.DBXContains {
			if !slices.Contains(s.DBX, h) {
				missing = append(missing, h)
			}
		}
		if len(missing) > 0 {
			add("dbx lacks %d required revocation(s), first %s", len(missing), missing[0])
		}
	}
	if len(r.Firmware) > 0 && need(pcrFirmware, "firmware") {
		switch {
		case s.Firmware == "":
			add("firmware: no verifiable firmware version was measured")
		case !slices.Contains(r.Firmware, s.Firmware):
			add("firmware %q is not allowed", s.Firmware)
		}
	}
	if len(r.BootApps) > 0 && need(pcrBootApps, "boot_apps") {
		if len(s.BootApps) == 0 {
			add("boot_apps: no boot application was measured")
		}
		for i, d := range s.BootApps {
			if !slices.Contains(r.BootApps, d) {
				add("boot application %d (%s %s) is not allowed", i+1, s.Bank, d)
			}
		}
	}
	if len(r.BootFiles) > 0 && need(pcrGrubFiles, "boot_files") {
		if len(s.Files) == 0 {
			add("boot_files: no file was measured by the bootloader")
		}
		for i, f := range s.Files {
			if !slices.Contains(r.BootFiles, f.Digest) {
				add("file %d read by the bootloader (%s %s, logged as %q) is not allowed", i+1, s.Bank, f.Digest, f.Path)
			}
		}
	}
	if len(r.Cmdlines) > 0 && need(pcrGrubCmds, "kernel_cmdlines") && need(pcrSystemdCmd, "kernel_cmdlines") {
		if len(s.KernelCmdlines) == 0 {
			add("kernel_cmdlines: no kernel command line was measured (GRUB on PCR 8 or systemd on PCR 12)")
		}
		for _, c := range s.KernelCmdlines {
			if !slices.Contains(r.Cmdlines, c) {
				add("kernel command line %q is not allowed", c)
			}
		}
	}
	for _, v := range r.PCRs {
		got, ok := s.PCRs[v.Bank][v.Index]
		switch {
		case !ok:
			add("pcrs: PCR %d (%s) is not in the quote", v.Index, v.Bank)
		case got != v.Value:
			add("PCR %d (%s) is %s, the policy requires %s", v.Index, v.Bank, got, v.Value)
		}
	}
	return out
}

func (c Cert) String() string {
	if c.Subject != "" {
		return c.SHA256 + " (" + c.Subject + ")"
	}
	return c.SHA256
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// Cmdline returns the kernel command line when exactly one (however many
// times) was measured.
func (s *BootState) Cmdline() (string, bool) {
	if c := slices.Compact(slices.Sorted(slices.Values(s.KernelCmdlines))); len(c) == 1 {
		return c[0], true
	}
	return "", false
}

// CmdlineSHA256 is the hex SHA-256 of the one measured kernel command line,
// as the selector tpm:kernel_cmdline_sha256 carries it; ok is false when
// none or several were measured, or PCR 8 or 12 is not proven. Caveat: on
// its own it says what was measured, not that nothing else ran: a boot
// path where nothing measures the command line (a kernel started by the
// firmware) lets the OS measure one later. Entries that need it should
// select on a policy that pins boot_apps too.
func (s *BootState) CmdlineSHA256() (sum string, ok bool) {
	c, ok := s.Cmdline()
	if !ok || !s.Proven(pcrGrubCmds) || !s.Proven(pcrSystemdCmd) {
		return "", false
	}
	h := sha256.Sum256([]byte(c))
	return hex.EncodeToString(h[:]), true
}
