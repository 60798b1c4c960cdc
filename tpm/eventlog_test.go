package tpm_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/plinth-id/plinth/tpm"
)

func TestReadEventLog(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "log")
	os.WriteFile(log, []byte{1, 2, 3}, 0o600)
	if b, err := tpm.ReadEventLog(log); err != nil || len(b) != 3 {
		t.Fatalf("ReadEventLog = %v, %v", b, err)
	}
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o600)
	if _, err := tpm.ReadEventLog(empty); err == nil || err.Error() != "tpm: the event log "+empty+" is empty" {
		t.Fatalf("empty log: %v", err)
	}
	if _, err := tpm.ReadEventLog(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "securityfs must be mounted") {
		t.Fatalf("missing log: %v", err)
	}
}
