package verify_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/hex"
	"math/big"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/plinth-id/plinth/simulator"
	"github.com/plinth-id/plinth/tpm/verify"
)

// A synthetic fleet: certificates and images a boot can have.
var (
	pkCert, kekCert, dbCert, evilCert = testCert("Test PK"), testCert("Test KEK"), testCert("Test db"), testCert("Evil db")
	shim, grub, grubRevoked           = []byte("shim 15.7"), []byte("grub 2.06"), []byte("grub 2.04 (BootHole)")
	kernel, initrd                    = []byte("vmlinuz 6.1.0"), []byte("initrd 6.1.0")
	revokedHash                       = sha256.Sum256([]byte("revoked image"))
)

func testCert(cn string) []byte {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	t := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}}
	der, err := x509.CreateCertificate(rand.Reader, t, t, &k.PublicKey, k)
	if err != nil {
		panic(err)
	}
	return der
}

func fp(der []byte) string { s := sha256.Sum256(der); return hex.EncodeToString(s[:]) }
func dg(b []byte) string   { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// goodBoot is a Secure Boot GRUB boot that the test policy allows.
func goodBoot() simulator.BootConfig {
	return simulator.BootConfig{
		Firmware: "Plinth Test Firmware 1.2", SecureBoot: true,
		PK: [][]byte{pkCert}, KEK: [][]byte{kekCert}, DB: [][]byte{dbCert}, DBX: [][]byte{revokedHash[:]},
		Authorities: [][]byte{dbCert}, BootApps: [][]byte{shim, grub},
		Loader: "grub", Kernel: kernel, Initrd: initrd, KernelPath: "/boot/vmlinuz-6.1.0", Cmdline: "root=/dev/sda1 ro quiet",
	}
}

// measuredPCRs is what a TPM that measured raw would quote: PCRs 0-15 in
// the log's banks, those without events at their reset value.
func measuredPCRs(t *testing.T, raw []byte) verify.PCRValues {
	t.Helper()
	l, err := verify.ParseEventLog(raw)
	if err != nil {
		t.Fatal(err)
	}
	q := l.PCRValues()
	for alg, vals := range q {
		for p := range 16 {
			if vals[p] == nil {
				vals[p] = make([]byte, len(vals[firstKey(vals)]))
			}
		}
		q[alg] = vals
	}
	return q
}

func firstKey(m map[int][]byte) int {
	for k := range m {
		return k
	}
	return 0
}

func TestBootStateOfASyntheticBoot(t *testing.T) {
	raw := simulator.BuildBootLog(goodBoot())
	_, st, err := verify.VerifyEventLog(raw, measuredPCRs(t, raw))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		what      string
		got, want any
	}{
		{"bank", st.Bank, "sha256"},
		{"secure boot", st.SecureBoot, true},
		{"firmware", st.Firmware, "Plinth Test Firmware 1.2"},
		{"PK", st.PK[0].SHA256 + " " + st.PK[0].Subject, fp(pkCert) + " CN=Test PK"},
		{"KEK", st.KEK[0].SHA256, fp(kekCert)},
		{"db", st.DB[0].SHA256, fp(dbCert)},
		{"dbx", st.DBX, []string{hex.EncodeToString(revokedHash[:])}},
		{"authority", st.Authorities[0].Variable + " " + st.Authorities[0].SHA256, "db " + fp(dbCert)},
		{"boot apps", st.BootApps, []string{dg(shim), dg(grub)}},
		{"loader", st.Loader, "grub"},
		{"kernel", *st.Kernel, verify.File{Path: "/boot/vmlinuz-6.1.0", Digest: dg(kernel)}},
		{"initrd", *st.Initrd, verify.File{Path: "/initrd.img", Digest: dg(initrd)}},
		{"cmdlines", st.KernelCmdlines, []string{"/boot/vmlinuz-6.1.0 root=/dev/sda1 ro quiet"}},
		{"files", st.Files[0].Digest + " " + st.Files[1].Digest, dg(kernel) + " " + dg(initrd)},
	}
	for _, c := range checks {
		if !equalJSONish(c.got, c.want) {
			t.Errorf("%s: got %v, want %v", c.what, c.got, c.want)
		}
	}
}

func equalJSONish(a, b any) bool {
	switch x := a.(type) {
	case []string:
		return slices.Equal(x, b.([]string))
	}
	return a == b
}

func TestBootStateSystemdBoot(t *testing.T) {
	c := goodBoot()
	c.Loader, c.Initrd = "systemd-boot", nil
	raw := simulator.BuildBootLog(c)
	_, st, err := verify.VerifyEventLog(raw, measuredPCRs(t, raw))
	if err != nil {
		t.Fatal(err)
	}
	if st.Loader != "systemd-boot" || st.Kernel == nil || st.Kernel.Digest != dg(kernel) || st.Kernel.Path != "(UKI)" || !slices.Equal(st.KernelCmdlines, []string{"root=/dev/sda1 ro quiet"}) {
		t.Fatalf("state %+v, kernel %+v", st, st.Kernel)
	}
}

// find returns the index of the n-th event (from 0) matching f.
func find(l *verify.EventLog, n int, f func(e *verify.Event) bool) int {
	for i := range l.Events {
		if f(&l.Events[i]) {
			if n == 0 {
				return i
			}
			n--
		}
	}
	panic("no such event")
}

func isBootApp(e *verify.Event) bool { return e.Type == verify.EvEFIBootServicesApp }
func isSecureBootVar(e *verify.Event) bool {
	return e.Type == verify.EvEFIVariableDriverConfig && bytes.Contains(e.Data, []byte("S\x00e\x00c\x00u\x00r\x00e\x00B\x00"))
}

// Every attack of the issue, each refused with its exact reason.
func TestEventLogAttacks(t *testing.T) {
	genuine := simulator.BuildBootLog(goodBoot())
	quote := measuredPCRs(t, genuine)
	other := goodBoot()
	other.Cmdline = "root=/dev/sda1 ro init=/bin/sh"
	spliced := simulator.BuildBootLog(other)

	tamper := func(f func(l *verify.EventLog)) []byte {
		l, err := verify.ParseEventLog(genuine)
		if err != nil {
			t.Fatal(err)
		}
		f(l)
		enc, _ := encodeEventLog(genuine, l)
		return enc
	}
	tests := []struct {
		name string
		raw  []byte
		want string
	}{
		{"event removed", tamper(func(l *verify.EventLog) {
			i := find(l, 1, isBootApp)
			l.Events = slices.Delete(l.Events, i, i+1)
		}), "verify: event log: PCR 4 does not replay in bank SHA-1: its 3 events give "},
		{"event duplicated", tamper(func(l *verify.EventLog) {
			i := find(l, 0, isBootApp)
			l.Events = slices.Insert(l.Events, i, l.Events[i])
		}), "verify: event log: PCR 4 does not replay in bank SHA-1: its 5 events give "},
		{"events reordered", tamper(func(l *verify.EventLog) {
			i, j := find(l, 0, isBootApp), find(l, 1, isBootApp)
			l.Events[i], l.Events[j] = l.Events[j], l.Events[i]
		}), "verify: event log: PCR 4 does not replay in bank SHA-1: its 4 events give "},
		{"event added after the TPM's last measurement", tamper(func(l *verify.EventLog) {
			e := l.Events[find(l, 0, isBootApp)]
			l.Events = append(l.Events, e)
		}), "verify: event log: PCR 4 does not replay in bank SHA-1: the TPM measured only the first 4 of the log's 5 events on it; event 25 (EV_EFI_BOOT_SERVICES_APPLICATION) and any after it were never measured (added to the log)"},
		{"log of another boot spliced in", spliced, "verify: event log: PCR 8 does not replay in bank SHA-1: its 3 events give "},
		{"replays in one bank, not the other", tamper(func(l *verify.EventLog) {
			e := &l.Events[find(l, 1, isBootApp)]
			e.Digests = slices.Clone(e.Digests)
			e.Digests[0].Digest = bytes.Repeat([]byte{1}, 20) // sha1 only
		}), "verify: event log: PCR 4 does not replay in bank SHA-1, but does in bank SHA-256: the log's banks disagree (an event's SHA-1 digest was changed)"},
		{"truncated", genuine[:len(genuine)-7], "verify: event log: event 24: truncated at byte "},
		{"garbage", bytes.Repeat([]byte{0xA5}, 300), "verify: event log: event 0: PCR 2779096485 is out of range"},
		{"empty", nil, "verify: event log: event 0: truncated at byte 0 (want 28 more, 0 left)"},
		{"oversized", make([]byte, verify.MaxEventLogSize+1), "verify: event log: 1048577 bytes is over the limit of 1048576"},
		{"no bank of the log quoted", genuine, "verify: event log: none of the log's banks (sha1, sha256) is in the quote"},
		{"SHA-1-only log from a TPM with a SHA-256 bank", func() []byte {
			l, _ := verify.ParseEventLog(genuine)
			return sha1Only(l)
		}(), "verify: event log: the TPM has a sha256 bank, which the log does not carry (it has sha1): SHA-1 alone cannot vouch for a boot"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := quote
			if tc.name == "no bank of the log quoted" {
				q = verify.PCRValues{tpm2.TPMAlgSHA384: {0: make([]byte, 48)}}
			}
			_, _, err := verify.VerifyEventLog(tc.raw, q)
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("got %v\nwant %s…", err, tc.want)
			}
		})
	}
}

// A bound event's data changed on a PCR that replays in every bank (the
// attacker kept all digests): the state refuses it by event.
func TestEventLogDataBoundToDigest(t *testing.T) {
	c := goodBoot()
	c.SecureBoot = false
	raw := simulator.BuildBootLog(c)
	l, _ := verify.ParseEventLog(raw)
	i := find(l, 0, isSecureBootVar)
	l.Events[i].Data = bytes.Clone(l.Events[i].Data)
	l.Events[i].Data[len(l.Events[i].Data)-1] = 1
	// Only the data changed: the digests, and so the replay, are intact.
	enc, _ := encodeEventLog(raw, l)
	_, _, err := verify.VerifyEventLog(enc, measuredPCRs(t, raw))
	want := "verify: event log: event 3 (EV_EFI_VARIABLE_DRIVER_CONFIG, PCR 7, Secure Boot variable): its data does not match its SHA-1 digest"
	if err == nil || err.Error() != want {
		t.Fatalf("got %v\nwant %s", err, want)
	}
}

// testPolicy allows goodBoot and nothing else.
func testPolicy() verify.Policy {
	on := true
	return verify.Policy{Name: "prod", Requirements: verify.Requirements{
		SecureBoot:  &on,
		PK:          verify.CertRule{Allowed: []string{fp(pkCert)}},
		KEK:         verify.CertRule{Allowed: []string{fp(kekCert)}},
		DB:          verify.CertRule{Allowed: []string{fp(dbCert)}, Forbidden: []string{fp(evilCert)}},
		DBXContains: []string{hex.EncodeToString(revokedHash[:])},
	}, References: []verify.Reference{
		{Name: "kernel-6.1", Requirements: verify.Requirements{
			Firmware:  []string{"Plinth Test Firmware 1.2"},
			BootApps:  []string{dg(shim), dg(grub)},
			BootFiles: []string{dg(kernel), dg(initrd)},
			Cmdlines:  []string{"/boot/vmlinuz-6.1.0 root=/dev/sda1 ro quiet"},
		}},
	}}
}

func stateOf(t *testing.T, c simulator.BootConfig, dropPCR int) *verify.BootState {
	t.Helper()
	raw := simulator.BuildBootLog(c)
	q := measuredPCRs(t, raw)
	if dropPCR >= 0 {
		for _, vals := range q {
			delete(vals, dropPCR)
		}
	}
	_, st, err := verify.VerifyEventLog(raw, q)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// Every policy rule passes on the boot it describes and fails, with its
// reason, on one that breaks it.
func TestPolicyRules(t *testing.T) {
	tests := []struct {
		name   string
		boot   func(c *simulator.BootConfig)
		policy func(p *verify.Policy)
		drop   int // PCR left out of the quote, -1 for none
		want   []string
	}{
		{name: "the allowed boot passes", drop: -1},
		{name: "Secure Boot off", boot: func(c *simulator.BootConfig) { c.SecureBoot = false }, drop: -1,
			want: []string{"Secure Boot is off, the policy requires on"}},
		{name: "PK not allowed", boot: func(c *simulator.BootConfig) { c.PK = [][]byte{evilCert} }, drop: -1,
			want: []string{"PK: certificate " + fp(evilCert) + " (CN=Evil db) is not allowed"}},
		{name: "KEK not allowed", boot: func(c *simulator.BootConfig) { c.KEK = append(c.KEK, evilCert) }, drop: -1,
			want: []string{"KEK: certificate " + fp(evilCert) + " (CN=Evil db) is not allowed"}},
		{name: "db certificate forbidden", boot: func(c *simulator.BootConfig) { c.DB = append(c.DB, evilCert) },
			policy: func(p *verify.Policy) { p.DB.Allowed = nil }, drop: -1,
			want: []string{"db: certificate " + fp(evilCert) + " (CN=Evil db) is forbidden"}},
		{name: "no PK at all", boot: func(c *simulator.BootConfig) { c.PK = nil }, drop: -1,
			want: []string{"PK: no certificate was measured"}},
		{name: "dbx lacks a revocation", boot: func(c *simulator.BootConfig) { c.DBX = nil }, drop: -1,
			want: []string{"dbx lacks 1 required revocation(s), first " + hex.EncodeToString(revokedHash[:])}},
		{name: "revoked bootloader", boot: func(c *simulator.BootConfig) { c.BootApps = [][]byte{shim, grubRevoked} }, drop: -1,
			want: []string{"no reference set matches", "reference kernel-6.1: boot application 2 (sha256 " + dg(grubRevoked) + ") is not allowed"}},
		{name: "firmware not allowed", boot: func(c *simulator.BootConfig) { c.Firmware = "Plinth Test Firmware 0.9" }, drop: -1,
			want: []string{"no reference set matches", `reference kernel-6.1: firmware "Plinth Test Firmware 0.9" is not allowed`}},
		{name: "kernel not allowed", boot: func(c *simulator.BootConfig) { c.Kernel = []byte("vmlinuz 5.10") }, drop: -1,
			want: []string{"no reference set matches", "reference kernel-6.1: file 1 read by the bootloader (sha256 " + dg([]byte("vmlinuz 5.10")) + `, logged as "/boot/vmlinuz-6.1.0") is not allowed`}},
		{name: "command line not allowed", boot: func(c *simulator.BootConfig) { c.Cmdline = "root=/dev/sda1 ro init=/bin/sh" }, drop: -1,
			want: []string{"no reference set matches", `reference kernel-6.1: kernel command line "/boot/vmlinuz-6.1.0 root=/dev/sda1 ro init=/bin/sh" is not allowed`}},
		{name: "a second reference set admits the new kernel", boot: func(c *simulator.BootConfig) { c.Kernel = []byte("vmlinuz 6.6") },
			policy: func(p *verify.Policy) {
				r := p.References[0]
				r.Name, r.BootFiles = "kernel-6.6", []string{dg([]byte("vmlinuz 6.6")), dg(initrd)}
				p.References = append(p.References, r)
			}, drop: -1},
		{name: "policy PCR missing from the quote", drop: 7,
			want: []string{"secure_boot: PCR 7 (sha256) is not in the quote", "pk: PCR 7 (sha256) is not in the quote",
				"kek: PCR 7 (sha256) is not in the quote", "db: PCR 7 (sha256) is not in the quote", "dbx_contains: PCR 7 (sha256) is not in the quote"}},
		{name: "files PCR missing from the quote", drop: 9,
			want: []string{"no reference set matches", "reference kernel-6.1: boot_files: PCR 9 (sha256) is not in the quote"}},
		{name: "exact PCR value", policy: func(p *verify.Policy) {
			p.PCRs = []verify.PCRValue{{Bank: "sha256", Index: 0, Value: strings.Repeat("00", 32)}}
		}, drop: -1, want: []string{"PCR 0 (sha256) is "}},
		{name: "exact PCR value not quoted", policy: func(p *verify.Policy) {
			p.PCRs = []verify.PCRValue{{Bank: "sha256", Index: 16, Value: strings.Repeat("00", 32)}}
		}, drop: -1, want: []string{"pcrs: PCR 16 (sha256) is not in the quote"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, p := goodBoot(), testPolicy()
			if tc.boot != nil {
				tc.boot(&c)
			}
			if tc.policy != nil {
				tc.policy(&p)
			}
			if err := p.Validate(); err != nil {
				t.Fatal(err)
			}
			got := p.Evaluate(stateOf(t, c, tc.drop))
			if len(got) != len(tc.want) {
				t.Fatalf("got %q\nwant %q", got, tc.want)
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tc.want[i]) {
					t.Fatalf("reason %d: got %q\nwant %q…", i, got[i], tc.want[i])
				}
			}
		})
	}
}

func TestPolicyValidate(t *testing.T) {
	tests := []struct {
		p    verify.Policy
		want string
	}{
		{verify.Policy{Name: "bad name!"}, `policy name "bad name!": use letters, digits, '.', '_' and '-' (it becomes the selector tpm:policy:bad name!)`},
		{verify.Policy{Name: "p", Requirements: verify.Requirements{BootFiles: []string{"ABCD"}}}, `policy p: boot_files: "ABCD" is not a lowercase hex digest`},
		{verify.Policy{Name: "p", Requirements: verify.Requirements{PCRs: []verify.PCRValue{{Bank: "md5", Index: 1, Value: "00"}}}}, `policy p: pcrs: unknown bank "md5" in md5:1:00`},
		{verify.Policy{Name: "p", References: []verify.Reference{{Name: "a", Requirements: verify.Requirements{Firmware: []string{"v1"}}}, {Name: "a"}}}, `policy p: reference names must be set and distinct ("a")`},
		{verify.Policy{Name: "p"}, `policy p requires nothing, so every boot would pass it; there is no accept-all policy`},
		{verify.Policy{Name: "p", References: []verify.Reference{{Name: "a"}}}, `policy p: reference a requires nothing, so every boot would match it`},
	}
	for _, tc := range tests {
		if err := tc.p.Validate(); err == nil || err.Error() != tc.want {
			t.Errorf("got %v\nwant %s", err, tc.want)
		}
	}
	p := testPolicy()
	if got := p.NeededPCRs(); !slices.Equal(got, []int{0, 4, 7, 8, 9, 12}) {
		t.Errorf("NeededPCRs() = %v", got)
	}
}

// PCR 9 paths are the log's word: with two kernels read, a log that swaps
// their labels must not pass the allowed one off as the one that booted.
func TestGrubKernelLabelsAreNotTrusted(t *testing.T) {
	grubCmd := func(b *simulator.EventLogBuilder, s string) {
		b.MeasureDigest(8, verify.EvIPL, []byte(s), []byte("grub_cmd: "+s+"\x00"))
	}
	build := func(goodLabel, evilLabel string) []byte {
		b := simulator.NewEventLog()
		grubCmd(b, "linux /vmlinuz-good")
		b.MeasureDigest(9, verify.EvIPL, []byte("good kernel"), []byte(goodLabel+"\x00"))
		grubCmd(b, "linux /vmlinuz-evil")
		b.MeasureDigest(9, verify.EvIPL, []byte("evil kernel"), []byte(evilLabel+"\x00"))
		return b.Bytes()
	}
	honest := build("/vmlinuz-good", "/vmlinuz-evil")
	swapped := build("/vmlinuz-evil", "/vmlinuz-good") // same digests, same PCRs
	for _, raw := range [][]byte{honest, swapped} {
		_, st, err := verify.VerifyEventLog(raw, measuredPCRs(t, honest))
		if err != nil {
			t.Fatal(err)
		}
		if st.Kernel != nil {
			t.Fatalf("kernel %+v identified by unmeasured labels", st.Kernel)
		}
		p := verify.Policy{Name: "k", Requirements: verify.Requirements{BootFiles: []string{dg([]byte("good kernel"))}}}
		if got := p.Evaluate(st); len(got) != 1 || !strings.HasPrefix(got[0], "file 2 read by the bootloader (sha256 "+dg([]byte("evil kernel"))) {
			t.Fatalf("boot_files rule: %q", got)
		}
		if len(st.Notes) == 0 || !strings.Contains(st.Notes[0], "GRUB ran 2 kernel command(s)") {
			t.Fatalf("notes %q", st.Notes)
		}
	}
}

// sha1Only writes l as a SHA-1-format log (TCG_PCClientPCREvent), dropping
// its other banks, as an attacker downgrading the evidence would.
func sha1Only(l *verify.EventLog) []byte {
	var b []byte
	for _, e := range l.Events[1:] {
		b = binary.LittleEndian.AppendUint32(b, uint32(e.PCR))
		b = binary.LittleEndian.AppendUint32(b, uint32(e.Type))
		b = append(b, e.Digest(tpm2.TPMAlgSHA1)...)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(e.Data)))
		b = append(b, e.Data...)
	}
	return b
}

// An event's type and a GRUB string's label are not measured: an attacker
// may rewrite them under intact digests. None of that may hide a boot
// application, a Secure Boot variable, a kernel or a command line.
func TestRelabelledAndRetypedEvents(t *testing.T) {
	c := goodBoot()
	c.BootApps = [][]byte{shim, grub, []byte("evil.efi")}
	c.DB = append(c.DB, evilCert)
	genuine := simulator.BuildBootLog(c)
	quote := measuredPCRs(t, genuine)
	edit := func(f func(l *verify.EventLog)) *verify.BootState {
		t.Helper()
		l, _ := verify.ParseEventLog(genuine)
		f(l)
		enc, _ := encodeEventLog(genuine, l)
		_, st, err := verify.VerifyEventLog(enc, quote)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	policy := testPolicy()
	policy.DB = verify.CertRule{Forbidden: []string{fp(evilCert)}}

	// The evil application retyped as a driver is still a boot application.
	st := edit(func(l *verify.EventLog) { l.Events[find(l, 2, isBootApp)].Type = verify.EvEFIBootServicesDriver })
	apps := verify.Policy{Name: "apps", Requirements: verify.Requirements{BootApps: []string{dg(shim), dg(grub)}}}
	if got := apps.Evaluate(st); !slices.Equal(got, []string{"boot application 3 (sha256 " + dg([]byte("evil.efi")) + ") is not allowed"}) {
		t.Errorf("retyped boot application passed: %q", got)
	}
	// db retyped as an action: db is then not measured, and the rule fails.
	isDB := func(e *verify.Event) bool {
		return e.Type == verify.EvEFIVariableDriverConfig && bytes.Contains(e.Data, []byte("d\x00b\x00")) && !bytes.Contains(e.Data, []byte("d\x00b\x00x\x00"))
	}
	st = edit(func(l *verify.EventLog) { l.Events[find(l, 0, isDB)].Type = verify.EvEFIAction })
	if got := policy.Evaluate(st); !slices.Contains(got, "db: the variable was not measured") {
		t.Errorf("hidden db passed: %q", got)
	}
	// db retyped as anything that has no place on PCR 7: refused.
	l, _ := verify.ParseEventLog(genuine)
	i := find(l, 0, isDB)
	l.Events[i].Type = verify.EvEFIVariableBoot
	enc, _ := encodeEventLog(genuine, l)
	if _, _, err := verify.VerifyEventLog(enc, quote); err == nil || !strings.HasSuffix(err.Error(), "(EV_EFI_VARIABLE_BOOT, PCR 7): an event of this type has no place on PCR 7") {
		t.Errorf("retyped db variable: %v", err)
	}

	// GRUB: the second linux command relabelled, or mislabelled beyond
	// recognition, does not give way to the first.
	grubCmd := func(b *simulator.EventLogBuilder, label, s string) {
		b.MeasureDigest(8, verify.EvIPL, []byte(s), []byte(label+s+"\x00"))
	}
	build := func(label string) []byte {
		b := simulator.NewEventLog()
		grubCmd(b, "grub_cmd: ", "linux /vmlinuz root=/dev/sda1 ro")
		b.MeasureDigest(9, verify.EvIPL, []byte("good kernel"), []byte("/vmlinuz\x00"))
		grubCmd(b, label, "linux /vmlinuz init=/bin/sh")
		grubCmd(b, "kernel_cmdline: ", "/vmlinuz init=/bin/sh")
		return b.Bytes()
	}
	honest := build("grub_cmd: ")
	utf16 := func() []byte { // the evil command's data rewritten as a systemd-style UTF-16 string
		l, _ := verify.ParseEventLog(honest)
		l.Events[3].Data = []byte("r\x00o\x00 \x00q\x00u\x00i\x00e\x00t\x00\x00\x00")
		enc, _ := encodeEventLog(honest, l)
		return enc
	}()
	for _, raw := range [][]byte{build("module_cmdline: "), build("zzz "), utf16} {
		_, st, err := verify.VerifyEventLog(raw, measuredPCRs(t, honest))
		if err != nil {
			t.Fatal(err)
		}
		if len(st.KernelCmdlines) > 0 && !slices.Contains(st.KernelCmdlines, "/vmlinuz init=/bin/sh") {
			t.Errorf("kernel %+v, command lines %q", st.Kernel, st.KernelCmdlines)
		}
	}
}

// What a compromised OS can add after boot (it may extend PCRs 0-15), and
// what GRUB really runs but a naive reader would miss: every measured value
// must be allowed, and added ones never replace the boot's.
func TestAddedAndHiddenMeasurements(t *testing.T) {
	grubCmd := func(b *simulator.EventLogBuilder, s string) {
		b.MeasureDigest(8, verify.EvIPL, []byte(s), []byte("grub_cmd: "+s+"\x00"))
	}
	good := "/vmlinuz root=/dev/sda1 ro"
	policy := verify.Policy{Name: "p", Requirements: verify.Requirements{Cmdlines: []string{good}}}
	state := func(raw []byte) *verify.BootState {
		t.Helper()
		_, st, err := verify.VerifyEventLog(raw, measuredPCRs(t, raw))
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	evil := `kernel command line "/vmlinuz-evil init=/bin/sh" is not allowed`

	// "! linux X" still loads X.
	b := simulator.NewEventLog()
	grubCmd(b, "linux "+good)
	grubCmd(b, "! linux /vmlinuz-evil init=/bin/sh")
	if got := policy.Evaluate(state(b.Bytes())); !slices.Equal(got, []string{evil}) {
		t.Errorf("negated linux: %q", got)
	}

	// The OS appends the allowed command line after booting an evil one.
	b = simulator.NewEventLog()
	grubCmd(b, "linux /vmlinuz-evil init=/bin/sh")
	grubCmd(b, "linux "+good)
	st := state(b.Bytes())
	if got := policy.Evaluate(st); !slices.Equal(got, []string{evil}) {
		t.Errorf("appended command line: %q", got)
	}
	if _, ok := st.CmdlineSHA256(); ok {
		t.Error("a command-line selector for a boot with two command lines")
	}

	// systemd's command line beside GRUB's: the loader is unknown and both
	// must be allowed.
	b = simulator.NewEventLog()
	grubCmd(b, "linux "+good)
	b.Measure(12, verify.EvIPL, utf16z("/vmlinuz-evil init=/bin/sh"))
	st = state(b.Bytes())
	if got := policy.Evaluate(st); st.Loader != "" || !slices.Equal(got, []string{evil}) {
		t.Errorf("GRUB and systemd: loader %q, %q", st.Loader, got)
	}

	// A PCR 12 event whose data is not what was measured hides what it was.
	b = simulator.NewEventLog()
	b.MeasureDigest(12, verify.EvIPL, utf16z("/vmlinuz-evil init=/bin/sh"), utf16z(good))
	if got := policy.Evaluate(state(b.Bytes())); !slices.Equal(got, []string{"kernel_cmdlines: no kernel command line was measured (GRUB on PCR 8 or systemd on PCR 12)"}) {
		t.Errorf("rewritten PCR 12: %q", got)
	}

	// An image passed off as an action on PCR 4 is still a boot application.
	image := []byte("MZ\x90\x00\x03\x00 evil bootkit")
	b = simulator.NewEventLog()
	b.Measure(4, verify.EvEFIAction, image)
	if st := state(b.Bytes()); !slices.Equal(st.BootApps, []string{dg(image)}) {
		t.Errorf("image as an action: boot apps %q", st.BootApps)
	}

	// A firmware version measured after PCR 0's separator is the OS's.
	b = simulator.NewEventLog()
	b.Measure(0, verify.EvSCRTMVersion, utf16z("1.0"))
	b.Measure(0, verify.EvSeparator, []byte{0, 0, 0, 0})
	b.Measure(0, verify.EvSCRTMVersion, utf16z("2.0"))
	if st := state(b.Bytes()); st.Firmware != "1.0" {
		t.Errorf("firmware %q, want the one before the separator", st.Firmware)
	}
}

// utf16z is s in UTF-16LE with a NUL, as UEFI and systemd write strings.
func utf16z(s string) []byte {
	var b []byte
	for _, r := range s {
		b = append(b, byte(r), 0)
	}
	return append(b, 0, 0)
}

// Without a separator, the OS could have added a Secure Boot variable or a
// firmware version after boot: neither is read.
func TestNoSeparatorNoFirmwareFacts(t *testing.T) {
	b := simulator.NewEventLog()
	b.Measure(0, verify.EvSCRTMVersion, utf16z("1.0"))
	sb := []byte{0x61, 0xdf, 0xe4, 0x8b, 0xca, 0x93, 0xd2, 0x11, 0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c} // EFI_GLOBAL_VARIABLE
	sb = binary.LittleEndian.AppendUint64(sb, 10)
	sb = binary.LittleEndian.AppendUint64(sb, 1)
	sb = append(append(sb, utf16z("SecureBoot")[:20]...), 1)
	b.Measure(7, verify.EvEFIVariableDriverConfig, sb)
	raw := b.Bytes()
	_, st, err := verify.VerifyEventLog(raw, measuredPCRs(t, raw))
	if err != nil {
		t.Fatal(err)
	}
	on := true
	p := verify.Policy{Name: "p", Requirements: verify.Requirements{SecureBoot: &on, Firmware: []string{"1.0"}}}
	want := []string{"SecureBoot: the variable was not measured", "firmware: no verifiable firmware version was measured"}
	if got := p.Evaluate(st); !slices.Equal(got, want) || st.SecureBoot {
		t.Fatalf("got %q (secure boot %v), want %q", got, st.SecureBoot, want)
	}
}

// Third review: a separator disguised by the log still ends its PCR's
// firmware facts; a kernel chainloaded with its own command line makes the
// command lines unknown; the command-line selector needs PCRs 8 and 12.
func TestThirdReviewAttacks(t *testing.T) {
	sbVar := func(on byte) []byte {
		v := []byte{0x61, 0xdf, 0xe4, 0x8b, 0xca, 0x93, 0xd2, 0x11, 0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c}
		v = binary.LittleEndian.AppendUint64(v, 10)
		v = binary.LittleEndian.AppendUint64(v, 1)
		return append(append(v, utf16z("SecureBoot")[:20]...), on)
	}
	// Measured: Secure Boot off, the separator, then (by the OS) Secure
	// Boot on and another separator.
	b := simulator.NewEventLog()
	b.Measure(7, verify.EvEFIVariableDriverConfig, sbVar(0))
	b.Measure(7, verify.EvSeparator, []byte{0, 0, 0, 0})
	b.Measure(7, verify.EvEFIVariableDriverConfig, sbVar(1))
	b.Measure(7, verify.EvSeparator, []byte{0, 0, 0, 0})
	honest := b.Bytes()
	l, _ := verify.ParseEventLog(honest)
	l.Events[1].Type = verify.EvEFIAction // hides the real variable (its data still binds)
	l.Events[2].Type, l.Events[2].Data = verify.EvEFIVariableAuthority, []byte("junk")
	forged, _ := encodeEventLog(honest, l)
	_, _, err := verify.VerifyEventLog(forged, measuredPCRs(t, honest))
	if want := "verify: event log: event 3 (EV_EFI_VARIABLE_DRIVER_CONFIG, PCR 7): Secure Boot configuration measured after the separator"; err == nil || err.Error() != want {
		t.Errorf("disguised separator: %v", err)
	}

	grubCmd := func(b *simulator.EventLogBuilder, s string) {
		b.MeasureDigest(8, verify.EvIPL, []byte(s), []byte("grub_cmd: "+s+"\x00"))
	}
	b = simulator.NewEventLog()
	grubCmd(b, "chainloader /boot/vmlinuz init=/bin/sh")
	grubCmd(b, "linux /vmlinuz ro") // by the OS, after boot
	raw := b.Bytes()
	_, st, err := verify.VerifyEventLog(raw, measuredPCRs(t, raw))
	if err != nil {
		t.Fatal(err)
	}
	if len(st.KernelCmdlines) != 0 {
		t.Errorf("chainloaded kernel: command lines %q", st.KernelCmdlines)
	}

	b = simulator.NewEventLog()
	grubCmd(b, "linux /vmlinuz ro")
	raw = b.Bytes()
	q := measuredPCRs(t, raw)
	q[tpm2.TPMAlgSHA1][12], q[tpm2.TPMAlgSHA256][12] = bytes.Repeat([]byte{1}, 20), bytes.Repeat([]byte{1}, 32) // extended, not logged
	_, st, err = verify.VerifyEventLog(raw, q)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := st.CmdlineSHA256(); ok || st.Proven(12) {
		t.Error("a command-line selector while PCR 12 holds an unlogged measurement")
	}
}
