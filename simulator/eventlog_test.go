package simulator_test

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"log"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/google/go-tpm/tpm2"

	"github.com/plinth-id/plinth/simulator"
	"github.com/plinth-id/plinth/tpm"
	"github.com/plinth-id/plinth/tpm/verify"
)

func mustHex(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

func sum1(b []byte) []byte   { s := sha1.Sum(b); return s[:] }
func sum256(b []byte) []byte { s := sha256.Sum256(b); return s[:] }

func utf16z(s string) []byte {
	var b []byte
	for _, u := range utf16.Encode([]rune(s)) {
		b = binary.LittleEndian.AppendUint16(b, u)
	}
	return append(b, 0, 0)
}

func parse(t *testing.T, b []byte) *verify.EventLog {
	t.Helper()
	l, err := verify.ParseEventLog(b)
	if err != nil {
		t.Fatal(err)
	}
	if !l.CryptoAgile || len(l.Banks) != 2 || l.Banks[0] != tpm2.TPMAlgSHA1 || l.Banks[1] != tpm2.TPMAlgSHA256 {
		t.Fatalf("crypto-agile %v, banks %v; want a crypto-agile sha1+sha256 log", l.CryptoAgile, l.Banks)
	}
	return l
}

// checkDigests checks that e's digests are the hashes of measured.
func checkDigests(t *testing.T, e verify.Event, measured []byte) {
	t.Helper()
	if !bytes.Equal(e.Digest(tpm2.TPMAlgSHA1), sum1(measured)) || !bytes.Equal(e.Digest(tpm2.TPMAlgSHA256), sum256(measured)) {
		t.Errorf("event %d (PCR %d, %s): digests are not the hashes of %q", e.Seq, e.PCR, e.Type, measured)
	}
}

func TestEventLogBuilder(t *testing.T) {
	b := simulator.NewEventLog()
	b.Measure(4, verify.EvEFIAction, []byte("action"))
	b.MeasureDigest(8, verify.EvIPL, []byte("linux /vmlinuz"), []byte("grub_cmd: linux /vmlinuz\x00"))
	b.Measure(1, verify.EvNoAction, []byte("no action"))
	b.StartupLocality(3) // written after the header whenever it is called
	raw := b.Bytes()

	// The header event is byte for byte what real firmware writes for a
	// sha1+sha256 log (arch-linux-workstation.bin in go-tpm-tools).
	header := mustHex("00000000 03000000" + strings.Repeat("00", 20) + "25000000" +
		"53706563204944204576656e74303300 00000000 00020002 02000000 0400 1400 0b00 2000 00")
	if !bytes.HasPrefix(raw, header) {
		t.Fatalf("header\n%x\nwant\n%x", raw[:len(header)], header)
	}

	l := parse(t, raw)
	type ev struct {
		pcr int
		typ verify.EventType
	}
	var got []ev
	for _, e := range l.Events {
		got = append(got, ev{e.PCR, e.Type})
	}
	want := []ev{{0, verify.EvNoAction}, {0, verify.EvNoAction}, {4, verify.EvEFIAction}, {8, verify.EvIPL}, {1, verify.EvNoAction}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	if loc := l.Events[1]; string(loc.Data) != "StartupLocality\x00\x03" ||
		!bytes.Equal(loc.Digest(tpm2.TPMAlgSHA1), make([]byte, 20)) || !bytes.Equal(loc.Digest(tpm2.TPMAlgSHA256), make([]byte, 32)) {
		t.Errorf("StartupLocality event: data %q, digests %x", loc.Data, loc.Digests)
	}
	checkDigests(t, l.Events[2], []byte("action"))
	checkDigests(t, l.Events[3], []byte("linux /vmlinuz"))
	if string(l.Events[3].Data) != "grub_cmd: linux /vmlinuz\x00" {
		t.Errorf("MeasureDigest data %q", l.Events[3].Data)
	}
	if na := l.Events[4]; !bytes.Equal(na.Digest(tpm2.TPMAlgSHA256), make([]byte, 32)) || string(na.Data) != "no action" {
		t.Errorf("EV_NO_ACTION event: digests %x, data %q; want zero digests", na.Digests, na.Data)
	}
	if !bytes.Equal(raw, b.Bytes()) {
		t.Error("a second Bytes differs")
	}

	func() {
		defer func() {
			if r := recover(); fmt.Sprint(r) != "simulator: event log: PCR 24 is out of range 0-23" {
				t.Errorf("Measure on PCR 24: panic %v", r)
			}
		}()
		b.Measure(24, verify.EvIPL, nil)
	}()
}

// bootConfig is a GRUB boot with Secure Boot on.
func bootConfig() simulator.BootConfig {
	return simulator.BootConfig{
		Firmware:    "Plinth Test Firmware 1.0",
		SecureBoot:  true,
		PK:          [][]byte{[]byte("PK certificate DER")},
		KEK:         [][]byte{[]byte("KEK certificate 1"), []byte("KEK certificate 2")},
		DB:          [][]byte{[]byte("db certificate")},
		DBX:         [][]byte{sum256([]byte("revoked 1")), sum256([]byte("revoked 2"))},
		BootApps:    [][]byte{[]byte("shim"), []byte("grub")},
		Authorities: [][]byte{[]byte("db certificate")},
		Loader:      "grub",
		Kernel:      []byte("kernel image"),
		Initrd:      []byte("initrd image"),
		KernelPath:  "/boot/vmlinuz-6.8.0",
		Cmdline:     "root=/dev/sda1 ro",
	}
}

// x509List is an EFI_SIGNATURE_LIST of one X.509 certificate, written out
// field by field.
func x509List(der string) string {
	size := 16 + len(der)
	return "a159c0a5e494a74a87b5ab155c2bf072" + // EFI_CERT_X509_GUID
		hex.EncodeToString(binary.LittleEndian.AppendUint32(nil, uint32(28+size))) +
		"00000000" +
		hex.EncodeToString(binary.LittleEndian.AppendUint32(nil, uint32(size))) +
		"b02a8f6dc3514e4d9b1a706c696e7468" + // SignatureOwner
		hex.EncodeToString([]byte(der))
}

func TestBuildBootLog(t *testing.T) {
	c := bootConfig()
	l := parse(t, simulator.BuildBootLog(c))
	type ev struct {
		pcr  int
		typ  verify.EventType
		data string // hex; checked when not empty
	}
	sep := "00000000"
	want := []ev{
		{0, verify.EvNoAction, ""},
		{0, verify.EvSCRTMVersion, hex.EncodeToString(utf16z(c.Firmware))},
		{0, verify.EvEFIPlatformFirmwareBlob, "0000c0ff00000000" + "3300000000000000"},
		// The SecureBoot variable as real firmware logs it
		// (ubuntu-2104-no-dbx.bin in go-tpm-tools).
		{7, verify.EvEFIVariableDriverConfig, "61dfe48bca93d211aa0d00e098032b8c 0a00000000000000 0100000000000000 53006500630075007200650042006f006f007400 01"},
		{7, verify.EvEFIVariableDriverConfig, "61dfe48bca93d211aa0d00e098032b8c 0200000000000000 3e00000000000000 50004b00" + x509List("PK certificate DER")},
		{7, verify.EvEFIVariableDriverConfig, "61dfe48bca93d211aa0d00e098032b8c 0300000000000000 7a00000000000000 4b0045004b00" + x509List("KEK certificate 1") + x509List("KEK certificate 2")},
		{7, verify.EvEFIVariableDriverConfig, "cbb219d73a3d9645a3bcdad00e67656f 0200000000000000 3a00000000000000 64006200" + x509List("db certificate")},
		{7, verify.EvEFIVariableDriverConfig, "cbb219d73a3d9645a3bcdad00e67656f 0300000000000000 7c00000000000000 640062007800" +
			"2616c4c14c509240aca941f936934328 7c000000 00000000 30000000" +
			"b02a8f6dc3514e4d9b1a706c696e7468" + hex.EncodeToString(sum256([]byte("revoked 1"))) +
			"b02a8f6dc3514e4d9b1a706c696e7468" + hex.EncodeToString(sum256([]byte("revoked 2")))},
		{7, verify.EvSeparator, sep},
		{4, verify.EvEFIAction, hex.EncodeToString([]byte("Calling EFI Application from Boot Option"))},
		{0, verify.EvSeparator, sep}, {1, verify.EvSeparator, sep}, {2, verify.EvSeparator, sep}, {3, verify.EvSeparator, sep},
		{4, verify.EvSeparator, sep}, {5, verify.EvSeparator, sep}, {6, verify.EvSeparator, sep},
		{7, verify.EvEFIVariableAuthority, "cbb219d73a3d9645a3bcdad00e67656f 0200000000000000 1e00000000000000 64006200" +
			"b02a8f6dc3514e4d9b1a706c696e7468" + hex.EncodeToString([]byte("db certificate"))},
		{4, verify.EvEFIBootServicesApp, "0000007e00000000 0400000000000000 0000000000000000 0000000000000000"},
		{4, verify.EvEFIBootServicesApp, "0000007f00000000 0400000000000000 0000000000000000 0000000000000000"},
		{8, verify.EvIPL, hex.EncodeToString([]byte("grub_cmd: linux /boot/vmlinuz-6.8.0 root=/dev/sda1 ro\x00"))},
		{9, verify.EvIPL, hex.EncodeToString([]byte("/boot/vmlinuz-6.8.0\x00"))},
		{8, verify.EvIPL, hex.EncodeToString([]byte("kernel_cmdline: /boot/vmlinuz-6.8.0 root=/dev/sda1 ro\x00"))},
		{8, verify.EvIPL, hex.EncodeToString([]byte("grub_cmd: initrd /initrd.img\x00"))},
		{9, verify.EvIPL, hex.EncodeToString([]byte("/initrd.img\x00"))},
	}
	if len(l.Events) != len(want) {
		for _, e := range l.Events {
			t.Logf("%d PCR %d %s %q", e.Seq, e.PCR, e.Type, e.Data)
		}
		t.Fatalf("%d events, want %d", len(l.Events), len(want))
	}
	for i, w := range want {
		e := l.Events[i]
		if e.PCR != w.pcr || e.Type != w.typ {
			t.Errorf("event %d: PCR %d %s, want PCR %d %s", i, e.PCR, e.Type, w.pcr, w.typ)
		}
		if wd := mustHex(w.data); w.data != "" && !bytes.Equal(e.Data, wd) {
			t.Errorf("event %d (PCR %d %s): data\n%x\nwant\n%x", i, e.PCR, e.Type, e.Data, wd)
		}
	}

	// What each digest covers.
	measured := map[int][]byte{
		2:  []byte("synthetic firmware volume: " + c.Firmware),
		18: []byte("shim"),
		19: []byte("grub"),
		20: []byte("linux /boot/vmlinuz-6.8.0 root=/dev/sda1 ro"),
		21: c.Kernel,
		22: []byte("/boot/vmlinuz-6.8.0 root=/dev/sda1 ro"),
		23: []byte("initrd /initrd.img"),
		24: c.Initrd,
	}
	for i, e := range l.Events[1:] {
		m, ok := measured[i+1]
		if !ok {
			m = e.Data // the digest covers the event data
		}
		checkDigests(t, e, m)
	}
}

func TestBuildBootLogSystemdBoot(t *testing.T) {
	c := bootConfig()
	c.Loader, c.SecureBoot, c.StartupLocality = "systemd-boot", false, 3
	c.PK, c.KEK, c.DB, c.DBX = nil, nil, nil, nil
	l := parse(t, simulator.BuildBootLog(c))
	if e := l.Events[1]; e.Type != verify.EvNoAction || string(e.Data) != "StartupLocality\x00\x03" {
		t.Errorf("event 1: %s %q, want the StartupLocality event", e.Type, e.Data)
	}
	var vars, apps []verify.Event
	var last verify.Event
	for _, e := range l.Events {
		switch e.Type {
		case verify.EvEFIVariableDriverConfig:
			vars = append(vars, e)
		case verify.EvEFIBootServicesApp:
			apps = append(apps, e)
		}
		last = e
	}
	// Unset variables are measured with empty data, SecureBoot with 0x00.
	wantVars := []string{
		"61dfe48bca93d211aa0d00e098032b8c 0a00000000000000 0100000000000000 53006500630075007200650042006f006f007400 00",
		"61dfe48bca93d211aa0d00e098032b8c 0200000000000000 0000000000000000 50004b00",
		"61dfe48bca93d211aa0d00e098032b8c 0300000000000000 0000000000000000 4b0045004b00",
		"cbb219d73a3d9645a3bcdad00e67656f 0200000000000000 0000000000000000 64006200",
		// As ubuntu-2104-no-dbx.bin logs its empty dbx.
		"cbb219d73a3d9645a3bcdad00e67656f 0300000000000000 0000000000000000 640062007800",
	}
	if len(vars) != len(wantVars) {
		t.Fatalf("%d variable events, want %d", len(vars), len(wantVars))
	}
	for i, w := range wantVars {
		if !bytes.Equal(vars[i].Data, mustHex(w)) {
			t.Errorf("variable %d: %x, want %s", i, vars[i].Data, w)
		}
	}
	// The UKI is the third EFI application.
	if len(apps) != 3 {
		t.Fatalf("%d EFI applications, want shim, grub and the UKI", len(apps))
	}
	checkDigests(t, apps[2], c.Kernel)
	// The command line, as systemd-stub measures it: UTF-16LE with its NUL,
	// in the data and the digest.
	if last.PCR != 12 || last.Type != verify.EvIPL || !bytes.Equal(last.Data, utf16z(c.Cmdline)) {
		t.Errorf("last event: PCR %d %s %x, want the PCR 12 command line", last.PCR, last.Type, last.Data)
	}
	checkDigests(t, last, utf16z(c.Cmdline))
	for _, e := range l.Events {
		if e.PCR == 8 || e.PCR == 9 {
			t.Errorf("event %d on PCR %d: systemd-boot measures nothing there", e.Seq, e.PCR)
		}
	}
}

func TestBuildBootLogPanics(t *testing.T) {
	for _, tc := range []struct {
		c    simulator.BootConfig
		want string
	}{
		{simulator.BootConfig{Loader: "lilo"}, `simulator: BuildBootLog: unknown Loader "lilo" (want grub, systemd-boot or empty)`},
		{simulator.BootConfig{DBX: [][]byte{make([]byte, 20)}}, "simulator: BuildBootLog: a DBX entry has 20 bytes, want a SHA-256 hash"},
	} {
		func() {
			defer func() {
				if r := recover(); fmt.Sprint(r) != tc.want {
					t.Errorf("panic %v, want %s", r, tc.want)
				}
			}()
			simulator.BuildBootLog(tc.c)
		}()
	}
}

// expectedPCRs computes, independently of ExtendEventLog, the PCRs 0-15 a
// log leaves in a TPM started at locality: each PCR folds the digests of its
// events, EV_NO_ACTION left out.
func expectedPCRs(t *testing.T, raw []byte, locality byte) verify.PCRValues {
	t.Helper()
	l := parse(t, raw)
	want := verify.PCRValues{}
	for alg, newHash := range map[tpm2.TPMAlgID]func() hash.Hash{tpm2.TPMAlgSHA1: sha1.New, tpm2.TPMAlgSHA256: sha256.New} {
		want[alg] = map[int][]byte{}
		for pcr := range 16 {
			v := make([]byte, newHash().Size())
			if pcr == 0 {
				v[len(v)-1] = locality
			}
			for _, e := range l.Events {
				if e.PCR == pcr && e.Type != verify.EvNoAction {
					h := newHash()
					h.Write(v)
					h.Write(e.Digest(alg))
					v = h.Sum(nil)
				}
			}
			want[alg][pcr] = v
		}
	}
	return want
}

var pcrs0to15 = verify.PCRSelection{
	tpm2.TPMAlgSHA1:   {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
	tpm2.TPMAlgSHA256: {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
}

func checkPCRs(t *testing.T, ctx context.Context, tp *tpm.TPM, want verify.PCRValues) {
	t.Helper()
	got, err := tp.ReadPCRs(ctx, pcrs0to15)
	if err != nil {
		t.Fatal(err)
	}
	for alg, pcrs := range want {
		for pcr, v := range pcrs {
			if !bytes.Equal(got[alg][pcr], v) {
				t.Errorf("bank %#x PCR %d = %x, want %x", uint16(alg), pcr, got[alg][pcr], v)
			}
		}
	}
}

func TestExtendEventLogInProcess(t *testing.T) {
	ctx := context.Background()
	sim, err := simulator.OpenInProcess(filepath.Join(t.TempDir(), "sim.json"))
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	raw := simulator.BuildBootLog(bootConfig())
	if err := simulator.ExtendEventLog(ctx, sim.TPM, raw); err != nil {
		t.Fatal(err)
	}
	checkPCRs(t, ctx, sim.TPM, expectedPCRs(t, raw, 0))
}

// TestExtendEventLogLocalityInProcess: the in-process simulator starts at
// locality 0 and cannot be started at 3.
func TestExtendEventLogLocalityInProcess(t *testing.T) {
	ctx := context.Background()
	sim, err := simulator.OpenInProcess(filepath.Join(t.TempDir(), "sim.json"))
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	c := bootConfig()
	c.StartupLocality = 3
	err = simulator.ExtendEventLog(ctx, sim.TPM, simulator.BuildBootLog(c))
	want := "simulator: replay event log: the log was recorded with StartupLocality 3: start the TPM at locality 3 (StartSWTPMAt) before replaying it (sha256 PCR 0 is " + strings.Repeat("00", 32) + ")"
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v\nwant %s", err, want)
	}
	// Nothing was extended.
	checkPCRs(t, ctx, sim.TPM, expectedPCRs(t, simulator.NewEventLog().Bytes(), 0))
}

func TestExtendEventLogErrors(t *testing.T) {
	ctx := context.Background()
	sim, err := simulator.OpenInProcess(filepath.Join(t.TempDir(), "sim.json"))
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()

	err = simulator.ExtendEventLog(ctx, sim.TPM, []byte("not a log"))
	if err == nil || !strings.HasPrefix(err.Error(), "simulator: replay event log: ") {
		t.Errorf("garbage: err = %v", err)
	}

	// An event the TPM refuses to extend: PCR 17 needs locality 4.
	b := simulator.NewEventLog()
	b.Measure(4, verify.EvEFIAction, []byte("fine"))
	b.Measure(17, verify.EvIPL, []byte("DRTM"))
	err = simulator.ExtendEventLog(ctx, sim.TPM, b.Bytes())
	if want := "simulator: replay event log: event 2 (PCR 17, EV_IPL): tpm: extend PCR 17: TPM2_PCR_Extend: "; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("PCR 17: err = %v\nwant prefix %s", err, want)
	}
}

// TestSWTPMStartupLocality starts swtpm at locality 3, as H-CRTM firmware
// does, and replays a log recorded so.
func TestSWTPMStartupLocality(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := simulator.ProvisionSWTPM(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := simulator.StartSWTPMAt(ctx, st, t.TempDir(), 2); err == nil ||
		err.Error() != "simulator: start swtpm: startup locality 2: a TPM starts at locality 0 or 3" {
		t.Errorf("locality 2: err = %v", err)
	}

	sw, err := simulator.StartSWTPMAt(ctx, st, t.TempDir(), 3)
	if err != nil {
		t.Fatal(err)
	}
	defer sw.Stop()
	tp, err := sw.Open()
	if err != nil {
		t.Fatal(err)
	}
	reset := expectedPCRs(t, simulator.NewEventLog().Bytes(), 3)
	if !bytes.Equal(reset[tpm2.TPMAlgSHA256][0], mustHex(strings.Repeat("00", 31)+"03")) {
		t.Fatal("test bug: the locality-3 reset value")
	}
	checkPCRs(t, ctx, tp, reset)

	// A log recorded without StartupLocality does not replay on PCR 0, but
	// one recorded with it does.
	c := bootConfig()
	c.StartupLocality = 3
	raw := simulator.BuildBootLog(c)
	if err := simulator.ExtendEventLog(ctx, tp, raw); err != nil {
		t.Fatal(err)
	}
	checkPCRs(t, ctx, tp, expectedPCRs(t, raw, 3))
	tp.Close()

	// A reboot starts at locality 3 again.
	if err := sw.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	tp, err = sw.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	checkPCRs(t, ctx, tp, reset)

	// swtpm's banks are sha1 and sha256: a log with only a sha384 bank is refused.
	err = simulator.ExtendEventLog(ctx, tp, sha384Log())
	if want := "simulator: replay event log: the TPM has none of the log's banks (log: sha384; active: sha1, sha256)"; err == nil || err.Error() != want {
		t.Errorf("sha384 log: err = %v\nwant %s", err, want)
	}

	// A real machine's boot, recorded at StartupLocality 3 (a Lenovo
	// workstation), reproduced in swtpm: its PCRs become exactly the ones
	// that machine's TPM held, and the log verifies against them.
	raw, err = os.ReadFile("../tpm/verify/testdata/eventlogs/glinux-alex.bin")
	if err != nil {
		t.Fatal(err)
	}
	if err := simulator.ExtendEventLog(ctx, tp, raw); err != nil {
		t.Fatal(err)
	}
	var real struct {
		PCRs map[string]map[string]string `json:"pcrs"`
	}
	j, _ := os.ReadFile("../tpm/verify/testdata/eventlogs/glinux-alex.json")
	if err := json.Unmarshal(j, &real); err != nil {
		t.Fatal(err)
	}
	want := verify.PCRValues{}
	for bank, vals := range real.PCRs {
		alg, _ := verify.ParseBank(bank)
		want[alg] = map[int][]byte{}
		for k, v := range vals {
			n, _ := strconv.Atoi(k)
			want[alg][n] = mustHex(v)
		}
	}
	checkPCRs(t, ctx, tp, want)
	if _, _, err := verify.VerifyEventLog(raw, want); err != nil {
		t.Fatal(err)
	}
}

// sha384Log is a crypto-agile log with only a sha384 bank and one event.
func sha384Log() []byte {
	spec := []byte("Spec ID Event03\x00")
	spec = append(spec, 0, 0, 0, 0, 0, 2, 0, 2, 1, 0, 0, 0, 0x0c, 0, 48, 0, 0)
	b := binary.LittleEndian.AppendUint32(nil, 0)
	b = binary.LittleEndian.AppendUint32(b, uint32(verify.EvNoAction))
	b = append(b, make([]byte, 20)...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(spec)))
	b = append(b, spec...)
	b = binary.LittleEndian.AppendUint32(b, 4)
	b = binary.LittleEndian.AppendUint32(b, uint32(verify.EvIPL))
	b = binary.LittleEndian.AppendUint32(b, 1)
	b = binary.LittleEndian.AppendUint16(b, 0x0c)
	b = append(b, make([]byte, 48)...)
	return binary.LittleEndian.AppendUint32(b, 0)
}

// A measured GRUB boot for a test TPM: build the log firmware and GRUB would
// have written, then extend it into the simulator so that its PCRs match.
func ExampleBuildBootLog() {
	dir, err := os.MkdirTemp("", "bootlog-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	raw := simulator.BuildBootLog(simulator.BootConfig{
		Firmware:   "Example Firmware 1.0",
		SecureBoot: true,
		BootApps:   [][]byte{[]byte("shim"), []byte("grub")},
		Loader:     "grub",
		Kernel:     []byte("kernel"),
		KernelPath: "/vmlinuz",
		Cmdline:    "ro quiet",
	})
	sim, err := simulator.OpenInProcess(filepath.Join(dir, "sim.json"))
	if err != nil {
		log.Fatal(err)
	}
	defer sim.Close()
	if err := simulator.ExtendEventLog(context.Background(), sim.TPM, raw); err != nil {
		log.Fatal(err)
	}

	l, err := verify.ParseEventLog(raw)
	if err != nil {
		log.Fatal(err)
	}
	for _, e := range l.Events[len(l.Events)-3:] {
		fmt.Printf("PCR %d %s %q\n", e.PCR, e.Type, e.Data)
	}
	// Output:
	// PCR 8 EV_IPL "grub_cmd: linux /vmlinuz ro quiet\x00"
	// PCR 9 EV_IPL "/vmlinuz\x00"
	// PCR 8 EV_IPL "kernel_cmdline: /vmlinuz ro quiet\x00"
}
