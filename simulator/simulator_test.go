package simulator_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/plinth-id/plinth/simulator"
	"github.com/plinth-id/plinth/tpm"
)

func TestInProcessState(t *testing.T) {
	ctx := context.Background()
	stateFile := filepath.Join(t.TempDir(), "sim.json")
	open := func() (*simulator.InProcess, *tpm.EK) {
		t.Helper()
		s, err := simulator.OpenInProcess(stateFile)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		ek, err := s.EK(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return s, ek
	}
	s1, ek1 := open()
	fi, err := os.Stat(stateFile)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v, want 0600", fi.Mode().Perm())
	}
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s1.Close(); err == nil {
		t.Error("a second Close succeeded")
	}

	s2, ek2 := open()
	if !bytes.Equal(ek1.Public, ek2.Public) {
		t.Error("the EK changed across opens")
	}
	if !bytes.Equal(ek1.Cert, ek2.Cert) {
		t.Error("the EK certificate changed across opens")
	}
	if !s1.ManufacturerCA.Equal(s2.ManufacturerCA) {
		t.Error("the manufacturer CA changed across opens")
	}
	caPEM, err := simulator.ManufacturerCAPEM(stateFile)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := pem.Decode(caPEM); b == nil || !bytes.Equal(b.Bytes, s2.ManufacturerCA.Raw) {
		t.Error("ManufacturerCAPEM is not the simulator's CA")
	}
	s2.Close()

	// Another state file is another TPM.
	other, err := simulator.OpenInProcess(filepath.Join(t.TempDir(), "other.json"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	ek3, err := other.EK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(ek3.Public, ek1.Public) {
		t.Error("two state files gave the same EK")
	}
}

func TestInProcessSingleton(t *testing.T) {
	s, err := simulator.OpenInProcess(filepath.Join(t.TempDir(), "sim.json"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = simulator.OpenInProcess(filepath.Join(t.TempDir(), "sim2.json"))
	if want := "simulator: the in-process TPM simulator is already open in this process (it is a process-wide singleton): close it first"; err == nil || err.Error() != want {
		t.Errorf("err = %v, want %s", err, want)
	}
}

func TestManufacturerCAPEMCreatesState(t *testing.T) {
	stateFile := filepath.Join(t.TempDir(), "sim.json")
	caPEM, err := simulator.ManufacturerCAPEM(stateFile)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(stateFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v, %v", fi, err)
	}
	again, err := simulator.ManufacturerCAPEM(stateFile)
	if err != nil || !bytes.Equal(again, caPEM) {
		t.Errorf("second call: %v, same = %v", err, bytes.Equal(again, caPEM))
	}
	if err := os.WriteFile(stateFile, []byte(`{"version": 9}`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = simulator.ManufacturerCAPEM(stateFile)
	if want := "simulator: state file " + stateFile + " has version 9, want 1 (delete it to start with a new simulated TPM)"; err == nil || err.Error() != want {
		t.Errorf("err = %v, want %s", err, want)
	}
}

var (
	oidSAN   = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidEKEKU = asn1.ObjectIdentifier{2, 23, 133, 8, 1}
)

// TestInProcessEKCert checks that the EK certificate looks like a real one,
// quirks included, and chains to ManufacturerCAPEM.
func TestInProcessEKCert(t *testing.T) {
	stateFile := filepath.Join(t.TempDir(), "sim.json")
	caPEM, err := simulator.ManufacturerCAPEM(stateFile)
	if err != nil {
		t.Fatal(err)
	}
	s, err := simulator.OpenInProcess(stateFile)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ek, err := s.EK(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if ek.CertIndex != tpm.NVIndexECCEKCert {
		t.Fatalf("EK certificate from %#x, want the ECC P-256 index", ek.CertIndex)
	}
	cert, err := x509.ParseCertificate(ek.Cert)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](ek.Public)
	if err != nil {
		t.Fatal(err)
	}
	ekKey, err := tpm2.Pub(*pub)
	if err != nil {
		t.Fatal(err)
	}
	if !ekKey.(*ecdsa.PublicKey).Equal(cert.PublicKey) {
		t.Error("the certificate is not for the EK")
	}

	// The quirks a verifier must handle.
	if len(cert.Subject.Names) != 0 {
		t.Errorf("subject %q, want empty", cert.Subject)
	}
	if len(cert.UnhandledCriticalExtensions) != 1 || !cert.UnhandledCriticalExtensions[0].Equal(oidSAN) {
		t.Errorf("unhandled critical extensions %v, want only the SAN", cert.UnhandledCriticalExtensions)
	}
	var san []byte
	for _, e := range cert.Extensions {
		if e.Id.Equal(oidSAN) {
			san = e.Value
		}
	}
	for _, attr := range []string{"\x06\x05\x67\x81\x05\x02\x01", "\x06\x05\x67\x81\x05\x02\x02", "\x06\x05\x67\x81\x05\x02\x03", "id:4D534654"} {
		if !bytes.Contains(san, []byte(attr)) {
			t.Errorf("SAN lacks %q", attr)
		}
	}
	if len(cert.UnknownExtKeyUsage) != 1 || !cert.UnknownExtKeyUsage[0].Equal(oidEKEKU) || len(cert.ExtKeyUsage) != 0 {
		t.Errorf("EKU %v %v, want only 2.23.133.8.1", cert.UnknownExtKeyUsage, cert.ExtKeyUsage)
	}
	if cert.KeyUsage != x509.KeyUsageKeyAgreement || cert.IsCA {
		t.Errorf("key usage %v, CA %v", cert.KeyUsage, cert.IsCA)
	}

	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("bad CA PEM")
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots}); err == nil {
		t.Error("x509.Verify accepted the EK certificate as is: the quirks are gone")
	}
	c := *cert
	c.UnhandledCriticalExtensions = nil // test only: the SAN was checked above
	if _, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("chain: %v", err)
	}
	ca, _ := pem.Decode(caPEM)
	caCert, _ := x509.ParseCertificate(ca.Bytes)
	if err := cert.CheckSignatureFrom(caCert); err != nil {
		t.Error(err)
	}
}

func TestSWTPM(t *testing.T) {
	if _, err := exec.LookPath("swtpm_setup"); err != nil {
		t.Skip("swtpm is not installed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	provDir := t.TempDir()
	st, err := simulator.ProvisionSWTPM(provDir)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(st.Dir, "tpm2-00.permall")); err != nil || !strings.HasPrefix(st.Dir, provDir) {
		t.Fatalf("state %s: %v, %v", st.Dir, fi, err)
	}
	sw, err := simulator.StartSWTPM(ctx, st, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer sw.Stop()
	pid := sw.PID()
	tp, err := sw.Open()
	if err != nil {
		t.Fatal(err)
	}
	ek, err := tp.EK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tp.Close()
	if ek.CertIndex != tpm.NVIndexRSAEKCert {
		t.Fatalf("EK certificate from %#x, want the RSA index", ek.CertIndex)
	}
	cert, err := x509.ParseCertificate(ek.Cert)
	if err != nil {
		t.Fatal(err)
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	for rest := st.CAPEM; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(c.RawSubject, c.RawIssuer) {
			roots.AddCert(c)
		} else {
			inter.AddCert(c)
		}
	}
	c := *cert
	c.UnhandledCriticalExtensions = nil // test only
	if _, err := c.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("swtpm EK chain: %v", err)
	}

	if err := sw.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := sw.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("swtpm pid %d still there after Stop: %v", pid, err)
	}
}

// TestSWTPMLongDir starts swtpm under a directory too long for unix socket
// paths.
func TestSWTPMLongDir(t *testing.T) {
	if _, err := exec.LookPath("swtpm_setup"); err != nil {
		t.Skip("swtpm is not installed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := simulator.ProvisionSWTPM(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	long := filepath.Join(t.TempDir(), strings.Repeat("d", 100))
	if err := os.Mkdir(long, 0o700); err != nil {
		t.Fatal(err)
	}
	sw, err := simulator.StartSWTPM(ctx, st, long)
	if err != nil {
		t.Fatal(err)
	}
	sockDir := filepath.Dir(sw.Socket)
	if err := sw.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sockDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket directory %s left behind: %v", sockDir, err)
	}
}
