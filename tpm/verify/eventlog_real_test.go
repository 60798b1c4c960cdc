package verify

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// realLog is a captured firmware log and the PCR values its machine's TPM
// held (testdata/eventlogs/README.md says where each comes from).
type realLog struct {
	Name  string
	Raw   []byte
	PCRs  PCRValues
	Notes string
}

func realLogs(t testing.TB) []realLog {
	t.Helper()
	files, err := filepath.Glob("testdata/eventlogs/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no real event logs in testdata: %v", err)
	}
	var out []realLog
	for _, f := range files {
		var j struct {
			Notes string                       `json:"notes"`
			PCRs  map[string]map[string]string `json:"pcrs"`
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &j); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		name := strings.TrimSuffix(filepath.Base(f), ".json")
		raw, err := os.ReadFile(strings.TrimSuffix(f, ".json") + ".bin")
		if err != nil {
			t.Fatal(err)
		}
		l := realLog{Name: name, Raw: raw, PCRs: PCRValues{}, Notes: j.Notes}
		for bank, vals := range j.PCRs {
			alg, ok := ParseBank(bank)
			if !ok {
				t.Fatalf("%s: bank %q", f, bank)
			}
			l.PCRs[alg] = map[int][]byte{}
			for k, v := range vals {
				n, _ := strconv.Atoi(k)
				l.PCRs[alg][n], _ = hex.DecodeString(v)
			}
		}
		out = append(out, l)
	}
	return out
}

// Real machines' logs replay, in every bank, against the PCR values their
// TPMs held, including SHA-1-only logs, StartupLocality 3 and a Windows
// log whose dynamic PCRs sit at their reset value, and yield their boot.
func TestRealLogsReplay(t *testing.T) {
	want := map[string]struct {
		secureBoot bool
		locality   byte
		loader     string
		cmdline    string
		firmware   string
	}{
		"arch-linux-workstation": {false, 0, "", "", "1efb6b540c1d5540a4ad4ef4bf17b83a"},
		"cos-101-amd-sev":        {true, 0, "grub", "", "GCE Virtual Firmware v1"},
		"debian-10":              {true, 0, "", "", "GCE Virtual Firmware v1"},
		"gdc-host":               {false, 3, "grub", "", ""},
		// Its Boot Guard S-CRTM contents event measured what a separator
		// measures, before the version: the version cannot be told from one
		// the OS added after boot, so it is not read (fails closed).
		"glinux-alex":                {false, 3, "", "", ""},
		"rhel8-uefi":                 {true, 0, "grub", "(hd0,gpt2)/boot/vmlinuz-4.18.0-240.22.1.el8_3.x86_64 root=UUID=f3948fb4-cce7-4193-940a-c50052e93bf3 ro net.ifnames=0 biosdevname=0 scsi_mod.use_blk_mq=Y crashkernel=auto console=ttyS0,38400n8", "GCE Virtual Firmware v1"},
		"ubuntu-2104-no-dbx":         {false, 0, "grub", "", "GCE Virtual Firmware v1"},
		"ubuntu-2104-no-secure-boot": {false, 0, "grub", "/boot/vmlinuz-5.11.0-1006-gcp root=PARTUUID=6443a6ae-e5e9-4df7-9a06-d1329e50f33c ro console=ttyS0 panic=-1", "GCE Virtual Firmware v1"},
		"windows-gcp-shielded-vm":    {true, 0, "", "", ""},
	}
	logs := realLogs(t)
	if len(logs) != len(want) {
		t.Fatalf("%d real logs, want %d", len(logs), len(want))
	}
	for _, l := range logs {
		t.Run(l.Name, func(t *testing.T) {
			log, st, err := VerifyEventLog(l.Raw, l.PCRs)
			if err != nil {
				t.Fatal(err)
			}
			w := want[l.Name]
			got := []any{st.SecureBoot, log.StartupLocality(), st.Loader, st.Firmware}
			exp := []any{w.secureBoot, w.locality, w.loader, w.firmware}
			for i := range got {
				if got[i] != exp[i] {
					t.Errorf("field %d: got %v, want %v", i, got[i], exp[i])
				}
			}
			if c, _ := st.Cmdline(); w.cmdline != "" && c != w.cmdline {
				t.Errorf("cmdline %q, want %q", st.KernelCmdlines, w.cmdline)
			}
			for bank, vals := range l.PCRs {
				if len(st.PCRs[BankName(bank)]) != len(vals) && slices.Contains(log.Banks, bank) {
					t.Errorf("bank %s: %d PCRs proven, %d quoted", BankName(bank), len(st.PCRs[BankName(bank)]), len(vals))
				}
			}
			// One byte of one event's digest changed: the log no longer
			// replays, whichever event it is.
			for _, i := range []int{1, len(log.Events) / 2, len(log.Events) - 1} {
				e := log.Events[i]
				if e.Type == EvNoAction {
					continue
				}
				e.Digests[0].Digest[0] ^= 1
				if _, err := log.Replay(l.PCRs); err == nil {
					t.Errorf("event %d tampered: log still replays", i)
				}
				e.Digests[0].Digest[0] ^= 1
			}
		})
	}
}
