package verify

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
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

func TestRealLogsDump(t *testing.T) {
	for _, l := range realLogs(t) {
		log, st, err := VerifyEventLog(l.Raw, l.PCRs)
		if err != nil {
			t.Errorf("%s: %v", l.Name, err)
			continue
		}
		b, _ := json.MarshalIndent(st, "", " ")
		if len(b) > 3000 {
			b = b[:3000]
		}
		t.Logf("%s: agile=%v banks=%v events=%d\n%s", l.Name, log.CryptoAgile, log.Banks, len(log.Events), b)
	}
}
