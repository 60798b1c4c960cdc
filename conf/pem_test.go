package conf

import (
	"os"
	"path/filepath"
	"testing"
)

func TestLoadCertificatesErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.pem")
	os.WriteFile(empty, []byte("not pem"), 0o600)
	if _, err := LoadCertificates(empty); err == nil || err.Error() != "conf: "+empty+" holds no PEM certificate" {
		t.Fatalf("LoadCertificates(no PEM) = %v", err)
	}
	bad := filepath.Join(dir, "bad.pem")
	os.WriteFile(bad, []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), 0o600)
	if _, err := LoadCertificates(bad); err == nil {
		t.Fatal("a malformed certificate was accepted")
	}
	if _, err := LoadCertificates(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("a missing file was accepted")
	}
}
