package tpm_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/plinth-id/plinth/simulator"
	"github.com/plinth-id/plinth/tpm"
)

// swtpmState is provisioned once for the whole test binary (about 1 s); each
// test starts its own swtpm on a copy. It is nil when swtpm is not installed.
var swtpmState *simulator.SWTPMState

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if _, err := exec.LookPath("swtpm_setup"); err == nil {
		dir, err := os.MkdirTemp("", "plinth-tpm-test-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		if swtpmState, err = simulator.ProvisionSWTPM(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	return m.Run()
}

// env is one TPM under test.
type env struct {
	TPM *tpm.TPM
	// Reopen closes the TPM and opens it again like after a reboot (swtpm
	// restarts on the same state; the simulator reopens the same state file).
	Reopen func(t testing.TB)
	// EKType is the EK TPM.EK must choose, and CertIndex where its
	// certificate is.
	EKType    tpm2.TPMAlgID
	CertIndex tpm2.TPMHandle
	// Roots and Intermediates verify the EK certificate.
	Roots, Intermediates *x509.CertPool
}

// backends runs f against the in-process simulator and against swtpm. The
// subtests never run in parallel: the simulator is a process-wide singleton.
func backends(t *testing.T, f func(t *testing.T, e *env)) {
	t.Run("inprocess", func(t *testing.T) { f(t, inProcess(t)) })
	t.Run("swtpm", func(t *testing.T) { f(t, swtpm(t)) })
}

func inProcess(t testing.TB) *env {
	stateFile := filepath.Join(t.TempDir(), "sim.json")
	var sim *simulator.InProcess
	open := func(t testing.TB) {
		var err error
		if sim, err = simulator.OpenInProcess(stateFile); err != nil {
			t.Fatal(err)
		}
	}
	open(t)
	e := &env{TPM: sim.TPM, EKType: tpm2.TPMAlgECC, CertIndex: tpm.NVIndexECCEKCert,
		Roots: x509.NewCertPool(), Intermediates: x509.NewCertPool()}
	e.Roots.AddCert(sim.ManufacturerCA)
	e.Reopen = func(t testing.TB) {
		if err := sim.Close(); err != nil {
			t.Fatal(err)
		}
		open(t)
		e.TPM = sim.TPM
	}
	t.Cleanup(func() { sim.Close() })
	return e
}

func swtpm(t testing.TB) *env {
	if swtpmState == nil {
		t.Skip("swtpm is not installed")
	}
	ctx := context.Background()
	sw, err := simulator.StartSWTPM(ctx, swtpmState, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sw.Stop() })
	tp, err := sw.Open()
	if err != nil {
		t.Fatal(err)
	}
	e := &env{TPM: tp, EKType: tpm2.TPMAlgRSA, CertIndex: tpm.NVIndexRSAEKCert,
		Roots: x509.NewCertPool(), Intermediates: x509.NewCertPool()}
	for rest := sw.CAPEM; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if c.Subject.String() == c.Issuer.String() {
			e.Roots.AddCert(c)
		} else {
			e.Intermediates.AddCert(c)
		}
	}
	e.Reopen = func(t testing.TB) {
		if err := e.TPM.Close(); err != nil {
			t.Fatal(err)
		}
		if err := sw.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		if e.TPM, err = sw.Open(); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { e.TPM.Close() })
	return e
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
