package verify_test

import (
	"bytes"
	"crypto"
	_ "crypto/sha1"
	_ "crypto/sha256"
	_ "crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/plinth-id/plinth/simulator"
	"github.com/plinth-id/plinth/tpm/verify"
)

// The event log comes from the agent, before anything in it is proven: the
// two targets below feed it client-chosen bytes. The seeds are the captured
// firmware logs of testdata/eventlogs, synthetic GRUB and systemd-boot logs,
// and a SHA-1 (TCG 1.2) log.

// eventLogSeeds returns the seed logs.
func eventLogSeeds(f *testing.F) [][]byte {
	f.Helper()
	files, err := filepath.Glob("testdata/eventlogs/*.bin")
	if err != nil || len(files) == 0 {
		f.Fatalf("no real event logs in testdata: %v", err)
	}
	var seeds [][]byte
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, b)
	}
	grub := goodBoot()
	sdboot := goodBoot()
	sdboot.Loader, sdboot.BootApps, sdboot.StartupLocality = "systemd-boot", [][]byte{shim}, 3
	seeds = append(seeds,
		simulator.BuildBootLog(grub),
		simulator.BuildBootLog(sdboot),
		simulator.BuildBootLog(simulator.BootConfig{}),
		simulator.NewEventLog().Bytes(),
		sha1Log(),
		sm3Log(),
	)
	return seeds
}

// sm3Log is a crypto-agile log with the sm3_256 and sha256 banks, whose one
// event, a separator on PCR 7, only the sha256 bank can replay.
func sm3Log() []byte {
	spec := []byte("Spec ID Event03\x00")
	spec = binary.LittleEndian.AppendUint32(spec, 0) // platformClass
	spec = append(spec, 0, 2, 0, 2)                  // version 2.0, errata 0, UINTN of 8 bytes
	spec = binary.LittleEndian.AppendUint32(spec, 2)
	spec = binary.LittleEndian.AppendUint16(spec, uint16(tpm2.TPMAlgSM3256))
	spec = binary.LittleEndian.AppendUint16(spec, 32)
	spec = binary.LittleEndian.AppendUint16(spec, uint16(tpm2.TPMAlgSHA256))
	spec = binary.LittleEndian.AppendUint16(spec, 32)
	spec = append(spec, 0) // vendorInfoSize
	b := binary.LittleEndian.AppendUint32(nil, 0)
	b = binary.LittleEndian.AppendUint32(b, uint32(verify.EvNoAction))
	b = append(b, make([]byte, 20)...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(spec)))
	b = append(b, spec...)
	sep := []byte{0, 0, 0, 0}
	b = binary.LittleEndian.AppendUint32(b, 7)
	b = binary.LittleEndian.AppendUint32(b, uint32(verify.EvSeparator))
	b = binary.LittleEndian.AppendUint32(b, 2)
	b = binary.LittleEndian.AppendUint16(b, uint16(tpm2.TPMAlgSM3256))
	b = append(b, bytes.Repeat([]byte{0x53}, 32)...) // not computed: nothing here hashes SM3
	b = binary.LittleEndian.AppendUint16(b, uint16(tpm2.TPMAlgSHA256))
	b = append(b, digestOf(crypto.SHA256, sep)...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(sep)))
	return append(b, sep...)
}

// sha1Log is a TCG 1.2 log: the firmware version on PCR 0 and a separator
// on PCR 7, SHA-1 only.
func sha1Log() []byte {
	var b []byte
	for _, e := range []struct {
		pcr  uint32
		typ  verify.EventType
		data []byte
	}{{0, verify.EvSCRTMVersion, []byte("1.0\x00")}, {7, verify.EvSeparator, []byte{0, 0, 0, 0}}} {
		b = binary.LittleEndian.AppendUint32(b, e.pcr)
		b = binary.LittleEndian.AppendUint32(b, uint32(e.typ))
		b = append(b, digestOf(crypto.SHA1, e.data)...)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(e.data)))
		b = append(b, e.data...)
	}
	return b
}

func digestOf(h crypto.Hash, b []byte) []byte {
	hh := h.New()
	hh.Write(b)
	return hh.Sum(nil)
}

// replayableHash is the hash of the banks the package replays.
func replayableHash(alg tpm2.TPMAlgID) (crypto.Hash, bool) {
	switch alg {
	case tpm2.TPMAlgSHA1:
		return crypto.SHA1, true
	case tpm2.TPMAlgSHA256:
		return crypto.SHA256, true
	case tpm2.TPMAlgSHA384:
		return crypto.SHA384, true
	case tpm2.TPMAlgSHA512:
		return crypto.SHA512, true
	}
	return 0, false
}

// encodeEventLog encodes l again, taking from raw only what the parser
// drops (the SHA-1 field of a crypto-agile log's Spec ID header), and
// returns where each event's digests are in it: at[i][j] is the offset of
// l.Events[i].Digests[j].Digest.
func encodeEventLog(raw []byte, l *verify.EventLog) (enc []byte, at [][]int) {
	at = make([][]int, len(l.Events))
	for i, e := range l.Events {
		enc = binary.LittleEndian.AppendUint32(enc, uint32(e.PCR))
		enc = binary.LittleEndian.AppendUint32(enc, uint32(e.Type))
		switch {
		case i == 0 && l.CryptoAgile: // TCG_PCClientPCREvent; the header's digest is not kept
			enc = append(enc, raw[8:28]...)
		case !l.CryptoAgile: // TCG_PCClientPCREvent
			at[i] = append(at[i], len(enc))
			enc = append(enc, e.Digests[0].Digest...)
		default: // TCG_PCR_EVENT2
			enc = binary.LittleEndian.AppendUint32(enc, uint32(len(e.Digests)))
			for _, d := range e.Digests {
				enc = binary.LittleEndian.AppendUint16(enc, uint16(d.Alg))
				at[i] = append(at[i], len(enc))
				enc = append(enc, d.Digest...)
			}
		}
		enc = binary.LittleEndian.AppendUint32(enc, uint32(len(e.Data)))
		enc = append(enc, e.Data...)
	}
	return enc, at
}

// checkEventLogError fails t unless err is the *verify.Error of the "event
// log" check.
func checkEventLogError(t *testing.T, err error) {
	t.Helper()
	var ve *verify.Error
	if !errors.As(err, &ve) || ve.Check != "event log" || !strings.HasPrefix(err.Error(), "verify: event log: ") {
		t.Fatalf("error %v (%T) is not a *verify.Error of check \"event log\"", err, err)
	}
}

func FuzzParseEventLog(f *testing.F) {
	for _, s := range eventLogSeeds(f) {
		f.Add(s)
		f.Add(s[:len(s)*2/3]) // cut inside an event
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := verify.ParseEventLog(b)
		if err != nil {
			if l != nil {
				t.Fatal("EventLog returned with an error")
			}
			checkEventLogError(t, err)
			return
		}
		if len(l.Banks) == 0 || !slices.IsSorted(l.Banks) || len(slices.Compact(slices.Clone(l.Banks))) != len(l.Banks) {
			t.Fatalf("banks %v: want some, sorted, each once", l.Banks)
		}
		if !l.CryptoAgile && !slices.Equal(l.Banks, []tpm2.TPMAlgID{tpm2.TPMAlgSHA1}) {
			t.Fatalf("SHA-1 log with banks %v", l.Banks)
		}
		if len(l.Events) == 0 || len(l.Events) > verify.MaxEvents {
			t.Fatalf("%d events", len(l.Events))
		}
		sizes := map[tpm2.TPMAlgID]int{}
		for i := range l.Events {
			e := &l.Events[i]
			if e.Seq != i || e.PCR < 0 || e.PCR > 23 || len(e.Data) > verify.MaxEventData {
				t.Fatalf("event %d: seq %d, PCR %d, %d bytes of data", i, e.Seq, e.PCR, len(e.Data))
			}
			_ = e.Describe()
			if i == 0 && l.CryptoAgile {
				if e.Type != verify.EvNoAction || len(e.Digests) != 0 {
					t.Fatalf("Spec ID header is %s with %d digests", e.Type, len(e.Digests))
				}
				continue
			}
			if len(e.Digests) != len(l.Banks) {
				t.Fatalf("event %d carries %d digests, the log has %d banks", i, len(e.Digests), len(l.Banks))
			}
			for _, d := range e.Digests {
				if !slices.Contains(l.Banks, d.Alg) || !bytes.Equal(e.Digest(d.Alg), d.Digest) {
					t.Fatalf("event %d: digest of bank %v, which is not the log's or listed twice", i, d.Alg)
				}
				want, ok := sizes[d.Alg]
				if h, known := replayableHash(d.Alg); known {
					want, ok = h.Size(), true
				}
				if !ok {
					want, sizes[d.Alg] = len(d.Digest), len(d.Digest)
				}
				if len(d.Digest) != want || want == 0 || want > 64 {
					t.Fatalf("event %d: %v digest of %d bytes, want %d", i, d.Alg, len(d.Digest), want)
				}
			}
		}
		if enc, _ := encodeEventLog(b, l); !bytes.Equal(enc, b) {
			t.Fatalf("the events do not encode back to the log:\n got %x\nwant %x", enc, b)
		}
		again, err := verify.ParseEventLog(bytes.Clone(b))
		if err != nil || !reflect.DeepEqual(again, l) {
			t.Fatalf("parsing again gives another log (%v)", err)
		}
		_ = l.StartupLocality()
		for alg, vals := range l.PCRValues() {
			h, ok := replayableHash(alg)
			if !ok || !slices.Contains(l.Banks, alg) {
				t.Fatalf("PCR values in bank %v", alg)
			}
			for p, v := range vals {
				if p < 0 || p > 23 || len(v) != h.Size() {
					t.Fatalf("PCR %d in bank %v: %x", p, alg, v)
				}
			}
		}
	})
}

// resealEventLog returns raw with every digest in a bank the package
// replays set to what the event's data is measured as: the hash of the
// data, or for a GRUB string on PCR 8 the hash of the string after its
// prefix. A mutated
// log then still passes the checks that bind data to digests, and the
// fuzzer reaches the readers of Secure Boot variables and bootloader events.
func resealEventLog(raw []byte, l *verify.EventLog) []byte {
	out := bytes.Clone(raw)
	_, at := encodeEventLog(raw, l)
	for i, e := range l.Events {
		if e.Type == verify.EvNoAction {
			continue
		}
		m := e.Data
		if s := string(m); e.PCR == 8 && e.Type == verify.EvIPL {
			if j := strings.IndexByte(s, 0); j >= 0 {
				s = s[:j]
			}
			for _, p := range []string{"grub_cmd: ", "kernel_cmdline: ", "module_cmdline: "} {
				if rest, ok := strings.CutPrefix(s, p); ok {
					m = []byte(rest)
					break
				}
			}
		}
		for j, d := range e.Digests {
			if h, ok := replayableHash(d.Alg); ok {
				copy(out[at[i][j]:], digestOf(h, m))
			}
		}
	}
	return out
}

// exactPCRPolicy is a policy that requires exactly the given PCR values.
func exactPCRPolicy(vals verify.PCRValues) verify.Policy {
	p := verify.Policy{Name: "quoted"}
	for alg, pcrs := range vals {
		for i, v := range pcrs {
			p.PCRs = append(p.PCRs, verify.PCRValue{Bank: verify.BankName(alg), Index: i, Value: hex.EncodeToString(v)})
		}
	}
	return p
}

// A log always replays to the PCR values it extends to itself, and never
// once one of its digests is changed.
func FuzzReplayEventLog(f *testing.F) {
	for i, s := range eventLogSeeds(f) {
		f.Add(s, uint16(i*7919), false)
		f.Add(s, uint16(i*104729), true)
	}
	policy := testPolicy()
	if err := policy.Validate(); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw []byte, pick uint16, resealed bool) {
		l, err := verify.ParseEventLog(raw)
		if err != nil {
			return
		}
		if resealed {
			raw = resealEventLog(raw, l)
			if l, err = verify.ParseEventLog(raw); err != nil {
				t.Fatalf("resealed log does not parse: %v", err)
			}
		}
		vals := l.PCRValues()
		if len(vals) == 0 { // no bank the package can replay
			_, _, err := verify.VerifyEventLog(raw, vals)
			checkEventLogError(t, err)
			return
		}
		replayed, err := l.Replay(vals)
		if err != nil {
			t.Fatalf("a log does not replay to its own PCR values: %v", err)
		}
		for alg, pcrs := range vals {
			for p := range pcrs {
				if !replayed.Has(alg, p) {
					t.Fatalf("PCR %d of bank %v replayed but is not in Replayed", p, alg)
				}
			}
		}
		_, st, err := verify.VerifyEventLog(raw, vals)
		if err != nil {
			// The log replayed: only a check of an event's data against its
			// digests, or of what the data holds, can refuse it.
			checkEventLogError(t, err)
		} else {
			exact := exactPCRPolicy(vals)
			if reasons := exact.Evaluate(st); reasons != nil {
				t.Fatalf("the boot state does not hold the PCR values it replayed: %v", reasons)
			}
			_ = policy.Evaluate(st)
			if _, err := json.Marshal(st); err != nil {
				t.Fatal(err)
			}
		}

		// A quote that also covers a bank the log lists but the package
		// cannot replay (SM3, say) is no reason to panic.
		withOther := verify.PCRValues{}
		for alg, pcrs := range vals {
			withOther[alg] = pcrs
		}
		for _, alg := range l.Banks {
			if _, ok := withOther[alg]; !ok {
				withOther[alg] = map[int][]byte{0: make([]byte, 32)}
			}
		}
		if r, err := l.Replay(withOther); err != nil || !reflect.DeepEqual(r, replayed) {
			t.Fatalf("with a quoted bank that cannot be replayed: %v, %v (want %v)", r, err, replayed)
		}

		// Change one digest in one replayed bank: the log no longer replays.
		type digestAt struct{ event, digest int }
		var measured []digestAt
		for i, e := range l.Events {
			for j, d := range e.Digests {
				if _, ok := vals[d.Alg]; ok && e.Type != verify.EvNoAction {
					measured = append(measured, digestAt{i, j})
				}
			}
		}
		if len(measured) == 0 {
			return
		}
		c := measured[int(pick)%len(measured)]
		_, at := encodeEventLog(raw, l)
		d := l.Events[c.event].Digests[c.digest]
		changed := bytes.Clone(raw)
		changed[at[c.event][c.digest]+int(pick)%len(d.Digest)] ^= 0x80
		cl, err := verify.ParseEventLog(changed)
		if err != nil {
			t.Fatalf("changing a digest made the log unparseable: %v", err)
		}
		if _, err := cl.Replay(vals); err == nil {
			t.Fatalf("event %d's %v digest changed, and the log still replays", c.event, d.Alg)
		} else {
			checkEventLogError(t, err)
		}
		if _, _, err := verify.VerifyEventLog(changed, vals); err == nil {
			t.Fatalf("event %d's %v digest changed, and VerifyEventLog accepts the log", c.event, d.Alg)
		}
	})
}

// A quoted bank the package cannot hash is not replayed (the bug
// FuzzReplayEventLog found: Replay panicked in crypto.Hash.Size), and a
// quote with no other bank of the log is refused.
func TestReplayUnreplayableBank(t *testing.T) {
	l, err := verify.ParseEventLog(sm3Log())
	if err != nil {
		t.Fatal(err)
	}
	sm3 := map[int][]byte{7: bytes.Repeat([]byte{1}, 32)}
	tests := []struct {
		name    string
		quoted  verify.PCRValues
		want    verify.Replayed
		wantErr string
	}{
		{"sm3 and sha256", verify.PCRValues{tpm2.TPMAlgSM3256: sm3, tpm2.TPMAlgSHA256: l.PCRValues()[tpm2.TPMAlgSHA256]},
			verify.Replayed{tpm2.TPMAlgSHA256: {7: true}}, ""},
		{"sm3 only", verify.PCRValues{tpm2.TPMAlgSM3256: sm3},
			nil, "verify: event log: the quote covers only banks of the log that cannot be replayed (alg18; sha1, sha256, sha384 and sha512 can)"},
		{"sha1 only", verify.PCRValues{tpm2.TPMAlgSHA1: {7: make([]byte, 20)}},
			nil, "verify: event log: none of the log's banks (sha256, alg18) is in the quote"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := l.Replay(tt.quoted)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("error %v, want %s", err, tt.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Replay = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}
