package bench

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	tpmattestor "github.com/plinth-id/plinth/attestors/tpm"
	"github.com/plinth-id/plinth/attestors/tpm/tpmagent"
	"github.com/plinth-id/plinth/simulator"
	"github.com/plinth-id/plinth/tpm/verify"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// BenchmarkMeasuredBoot measures what measured boot costs the server: the
// replay of a server-sized event log and the evaluation of a policy on it;
// the latency it adds to a tpm attestation against swtpm (the log read and
// sent, more PCRs quoted, the replay and the policy); and the heap a log at
// the size limit takes, with the refusal of one byte more.
func BenchmarkMeasuredBoot(b *testing.B) {
	boot := measuredBoot()
	raw := serverBootLog(b, boot, 150)
	policy := measuredBootPolicy(b, boot, raw)
	l, err := verify.ParseEventLog(raw)
	if err != nil {
		b.Fatal(err)
	}
	vals := quoteOf(l)

	// Verify + policy, as the server runs them on every attestation, and
	// parsing alone for scale.
	const n = 400
	var verifies, parses []time.Duration
	for range n {
		start := time.Now()
		if _, err := verify.ParseEventLog(raw); err != nil {
			b.Fatal(err)
		}
		parses = append(parses, time.Since(start))
		start = time.Now()
		_, st, err := verify.VerifyEventLog(raw, vals)
		if err != nil {
			b.Fatal(err)
		}
		if reasons := policy.Evaluate(st); len(reasons) > 0 {
			b.Fatalf("the benchmark's boot fails its policy: %v", reasons)
		}
		verifies = append(verifies, time.Since(start))
	}
	p50, parse := percentile(verifies, 50), percentile(parses, 50)
	record(fmt.Sprintf("measured boot: verify + policy, %d-event log", len(l.Events)),
		fmt.Sprintf("%s (%.0fx parse alone)", ms(p50), float64(p50)/float64(parse)), "<= 2 ms", p50 <= 2*time.Millisecond)
	b.ReportMetric(float64(p50.Microseconds())/1000, "ms/verify")

	measuredBootAttestation(b, raw, policy)
	measuredBootLargeLog(b, boot)
}

// measuredBootAttestation compares the tpm attestation with and without
// measured boot, interleaved on one swtpm that measured raw.
func measuredBootAttestation(b *testing.B, raw []byte, policy verify.Policy) {
	r := startTPMRig(b)
	// Once: PCRs accumulate, and the log replays only from their reset values.
	if err := simulator.ExtendEventLog(context.Background(), r.dev, raw); err != nil {
		b.Fatal(err)
	}
	logPath := filepath.Join(r.dir, "eventlog.bin")
	if err := os.WriteFile(logPath, raw, 0o600); err != nil {
		b.Fatal(err)
	}
	// One agent: it sends the log only when the server asks for it.
	agent, err := tpmagent.New(tpmagent.Config{TPM: r.dev, DataDir: filepath.Join(r.dir, "agent"), EventLogPath: logPath})
	if err != nil {
		b.Fatal(err)
	}
	td := spiffeid.RequireTrustDomainFromString("example.org")
	plain, err := tpmattestor.NewServer(tpmattestor.ServerConfig{TrustDomain: td, Mode: tpmattestor.ModeEKCert, EKCerts: r.ekCerts})
	if err != nil {
		b.Fatal(err)
	}
	measured, err := tpmattestor.NewServer(tpmattestor.ServerConfig{
		TrustDomain: td, Mode: tpmattestor.ModeEKCert, EKCerts: r.ekCerts,
		MeasuredBoot: &tpmattestor.MeasuredBoot{Policies: []verify.Policy{policy}, Required: policy.Name},
	})
	if err != nil {
		b.Fatal(err)
	}
	r.attest(b, agent, plain, "agent-svid-A") // creates the AK
	r.attest(b, agent, measured, "agent-svid-A")
	const n = 60
	var without, with, withoutServer, withServer []time.Duration
	for i := range n {
		id := []string{"agent-svid-A", "agent-svid-B"}[i%2]
		total, device := r.attest(b, agent, plain, id)
		without, withoutServer = append(without, total), append(withoutServer, total-device)
		total, device = r.attest(b, agent, measured, id)
		with, withServer = append(with, total), append(withServer, total-device)
	}
	p50, p50MB := percentile(without, 50), percentile(with, 50)
	added := p50MB - p50
	record("measured boot: added latency on a TPM attestation",
		fmt.Sprintf("%s (p50 %s -> %s)", signedMs(added), strings.TrimSuffix(ms(p50), " ms"), strings.TrimSuffix(ms(p50MB), " ms")),
		"<= 5 ms on top of the quote", added <= 5*time.Millisecond)
	serverAdded := percentile(withServer, 50) - percentile(withoutServer, 50)
	record("  of which in the server / in the TPM and agent (p50)", signedMs(serverAdded)+" / "+signedMs(added-serverAdded),
		"reported (PCRs 8, 9, 12 quoted too)", true)
}

// measuredBootLargeLog verifies a log just under MaxEventLogSize and
// reports the bytes it allocates and the heap the result holds, then
// checks that one byte more is refused before any parsing.
func measuredBootLargeLog(b *testing.B, boot simulator.BootConfig) {
	base := simulator.BuildBootLog(boot)
	// GRUB file events (PCR 9) with a path of about 1 KiB: the boot state
	// keeps every path, the most a log of this size can make it hold.
	more := simulator.NewEventLog()
	for i, size := 0, len(base); ; i++ {
		path := fmt.Sprintf("/boot/grub/x86_64-efi/%s%05d.mod", strings.Repeat("m", 992), i)
		data := []byte(path + "\x00") // 1 KiB
		// A TCG_PCR_EVENT2 with the sha1 and sha256 banks is 72 bytes and its data.
		if size += 72 + len(data); size > verify.MaxEventLogSize {
			break
		}
		more.MeasureDigest(9, verify.EvIPL, []byte(path), data)
	}
	raw := appendEvents(base, more)
	l, err := verify.ParseEventLog(raw)
	if err != nil {
		b.Fatal(err)
	}
	vals := l.PCRValues()

	var before, after, held runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	vl, st, err := verify.VerifyEventLog(raw, vals)
	took := time.Since(start)
	runtime.ReadMemStats(&after)
	if err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&held)
	runtime.KeepAlive(vl)
	runtime.KeepAlive(st)
	alloc := after.TotalAlloc - before.TotalAlloc
	kept := max(int64(held.HeapAlloc)-int64(before.HeapAlloc), 0)
	size := float64(len(raw))
	record("measured boot: 1 MiB log, heap", fmt.Sprintf("%s alloc, %.1fx the log", mb(alloc), float64(alloc)/size), "bounded, reported", true)
	record("  held after verify (log and boot state)", fmt.Sprintf("%s, %.1fx the log", mb(uint64(kept)), float64(kept)/size), "bounded, reported", true)

	// One byte over the limit: refused on its length alone.
	over := append(bytes.Clone(raw), make([]byte, verify.MaxEventLogSize+1-len(raw))...)
	var refusal time.Duration
	var refused error
	allocs := testing.AllocsPerRun(20, func() {
		start := time.Now()
		_, _, refused = verify.VerifyEventLog(over, vals)
		refusal = max(refusal, time.Since(start))
	})
	ok := refused != nil && strings.Contains(refused.Error(), "over the limit") && refusal < time.Millisecond
	record(fmt.Sprintf("  verify of its %d events / MaxEventLogSize+1 bytes refused in", len(l.Events)),
		fmt.Sprintf("%s / %.0f µs, %.0f allocs", ms(took), float64(refusal.Nanoseconds())/1000, allocs), "refused before parsing", ok)
	if refused == nil {
		b.Errorf("a log of %d bytes was accepted", len(over))
	}
}

// measuredBoot is a Secure Boot GRUB boot of a server: vendor PK, KEK and
// db certificates, a dbx of 200 revoked hashes, shim and GRUB.
func measuredBoot() simulator.BootConfig {
	c := simulator.BootConfig{
		Firmware: "Plinth Bench Firmware 2.1", SecureBoot: true,
		PK: [][]byte{benchCert("Bench PK")}, KEK: [][]byte{benchCert("Bench KEK")}, DB: [][]byte{benchCert("Bench db"), benchCert("Bench db 2")},
		BootApps: [][]byte{[]byte("shim 15.8"), []byte("grub 2.12")},
		Loader:   "grub", Kernel: []byte("vmlinuz 6.8.0"), Initrd: []byte("initrd 6.8.0"),
		KernelPath: "/boot/vmlinuz-6.8.0", Cmdline: "root=UUID=0f1e2d3c ro quiet splash",
	}
	c.Authorities = c.DB[:1]
	for i := range 200 {
		h := sha256.Sum256([]byte(fmt.Sprintf("revoked image %d", i)))
		c.DBX = append(c.DBX, h[:])
	}
	return c
}

// measuredBootPolicy is a production policy for raw's boot: Secure Boot on, the
// vendor's certificates, revocations in place; and two reference sets, the
// current one last, so that evaluation goes through both.
func measuredBootPolicy(b *testing.B, boot simulator.BootConfig, raw []byte) verify.Policy {
	on := true
	l, err := verify.ParseEventLog(raw)
	if err != nil {
		b.Fatal(err)
	}
	_, st, err := verify.VerifyEventLog(raw, quoteOf(l))
	if err != nil {
		b.Fatal(err)
	}
	var files []string // every file GRUB read: kernel, initrd, modules
	for _, f := range st.Files {
		files = append(files, f.Digest)
	}
	fp := func(der []byte) string { s := sha256.Sum256(der); return hex.EncodeToString(s[:]) }
	var dbx []string
	for _, h := range boot.DBX[len(boot.DBX)-5:] {
		dbx = append(dbx, hex.EncodeToString(h))
	}
	p := verify.Policy{Name: "prod", Requirements: verify.Requirements{
		SecureBoot:  &on,
		PK:          verify.CertRule{Allowed: []string{fp(boot.PK[0])}},
		KEK:         verify.CertRule{Allowed: []string{fp(boot.KEK[0])}},
		DB:          verify.CertRule{Allowed: []string{fp(boot.DB[0]), fp(boot.DB[1])}},
		DBXContains: dbx,
	}, References: []verify.Reference{
		{Name: "kernel-6.5", Requirements: verify.Requirements{
			BootApps:  []string{fp([]byte("shim 15.7")), fp([]byte("grub 2.06"))},
			BootFiles: []string{fp([]byte("vmlinuz 6.5.0"))},
			Cmdlines:  []string{"/boot/vmlinuz-6.5.0 root=UUID=0f1e2d3c ro quiet splash"},
		}},
		{Name: "kernel-6.8", Requirements: verify.Requirements{
			Firmware:  []string{boot.Firmware},
			BootApps:  []string{fp(boot.BootApps[0]), fp(boot.BootApps[1])},
			BootFiles: files,
			Cmdlines:  []string{boot.KernelPath + " " + boot.Cmdline},
		}},
	}}
	if err := p.Validate(); err != nil {
		b.Fatal(err)
	}
	return p
}

// serverBootLog is BuildBootLog's boot with the events firmware, GRUB and
// shim add on a real server, up to events events in all: boot variables
// (PCR 1), actions (PCR 5), GRUB's commands (PCR 8) and the modules and
// configuration it reads (PCR 9), and shim's MOK lists (PCR 14).
func serverBootLog(b *testing.B, boot simulator.BootConfig, events int) []byte {
	base := simulator.BuildBootLog(boot)
	l, err := verify.ParseEventLog(base)
	if err != nil {
		b.Fatal(err)
	}
	more := simulator.NewEventLog()
	for i := range events - len(l.Events) {
		switch i % 5 {
		case 0:
			more.Measure(1, verify.EvEFIVariableBoot, fmt.Appendf(nil, "Boot%04X: UEFI PXEv4 (MAC:52540012%04x)", i, i))
		case 1:
			more.Measure(5, verify.EvEFIAction, []byte("Exit Boot Services Invocation"))
		case 2:
			cmd := fmt.Sprintf("insmod part_gpt%d", i)
			more.MeasureDigest(8, verify.EvIPL, []byte(cmd), []byte("grub_cmd: "+cmd+"\x00"))
		case 3:
			path := fmt.Sprintf("(hd0,gpt2)/boot/grub/x86_64-efi/mod%d.mod", i)
			more.MeasureDigest(9, verify.EvIPL, []byte("module "+path), []byte(path+"\x00"))
		case 4:
			more.Measure(14, verify.EvIPL, fmt.Appendf(nil, "MokList entry %d", i))
		}
	}
	return appendEvents(base, more)
}

// appendEvents appends the events of more, without its Spec ID header, to
// the log base (both with the sha1 and sha256 banks).
func appendEvents(base []byte, more *simulator.EventLogBuilder) []byte {
	header := len(simulator.NewEventLog().Bytes())
	return append(base, more.Bytes()[header:]...)
}

func benchCert(cn string) []byte {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	t := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn, Organization: []string{"Plinth Bench"}},
		NotBefore: time.Now(), NotAfter: time.Now().Add(10 * 365 * 24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, t, t, &k.PublicKey, k)
	if err != nil {
		panic(err)
	}
	return der
}

// signedMs is ms with a sign.
func signedMs(d time.Duration) string {
	if d < 0 {
		return "-" + ms(-d)
	}
	return "+" + ms(d)
}

// quoteOf is what a TPM that measured l quotes: PCRs 0-15 in the log's
// banks, those without events at their reset value.
func quoteOf(l *verify.EventLog) verify.PCRValues {
	q := l.PCRValues()
	for alg, vals := range q {
		size := len(vals[0])
		for p := range 16 {
			if vals[p] == nil {
				vals[p] = make([]byte, size)
			}
		}
		q[alg] = vals
	}
	return q
}
