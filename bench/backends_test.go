package bench

import (
	"crypto"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ThalesIgnite/crypto11"
	"github.com/plinth-id/plinth/hsm"
	"github.com/plinth-id/plinth/hsm/pkcs11"
	"github.com/plinth-id/plinth/simulator"
)

var (
	softhsmOnce sync.Once
	softhsm     *simulator.SoftHSM
	softhsmErr  error
)

// softHSM starts one private SoftHSM token for the whole run (SoftHSM reads
// SOFTHSM2_CONF once per process).
func softHSM(b *testing.B) *simulator.SoftHSM {
	softhsmOnce.Do(func() {
		dir, err := os.MkdirTemp("", "bench-softhsm")
		if err != nil {
			softhsmErr = err
			return
		}
		if softhsm, softhsmErr = simulator.StartSoftHSM(filepath.Join(dir, "t"), "bench", "1234"); softhsmErr == nil {
			os.Setenv("SOFTHSM2_CONF", softhsm.Config)
		}
	})
	if softhsmErr != nil {
		b.Fatal(softhsmErr)
	}
	return softhsm
}

// extraBackends returns key backends that need a daemon or device: SoftHSM.
func extraBackends(b *testing.B) []struct {
	name   string
	keys   hsm.KeyManager
	n      int
	target float64
} {
	t := softHSM(b)
	m, err := pkcs11.New(pkcs11.Config{Module: t.Module, TokenLabel: t.TokenLabel, PIN: t.PIN, KeyIDPrefix: "ca/"})
	if err != nil {
		b.Fatal(err)
	}
	return []struct {
		name   string
		keys   hsm.KeyManager
		n      int
		target float64
	}{{"SoftHSM (PKCS#11)", m, 1000, 0}}
}

// BenchmarkPKCS11 compares the pkcs11 backend's signatures with crypto11
// used directly on the same SoftHSM token, in alternating rounds. Target:
// >= 0.8x (the backend adds no lookup per signature).
func BenchmarkPKCS11(b *testing.B) {
	t := softHSM(b)
	digest := sha256.Sum256([]byte("plinth hsm benchmark"))
	// The backend first: it refuses a module another library initialized.
	// crypto11 then shares the module through the same (resolved) path.
	m, err := pkcs11.New(pkcs11.Config{Module: t.Module, TokenLabel: t.TokenLabel, PIN: t.PIN, KeyIDPrefix: "bench/"})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	key, err := m.GenerateKey(b.Context(), "backend", hsm.ECP256)
	if err != nil {
		b.Fatal(err)
	}
	module, err := filepath.EvalSymlinks(t.Module)
	if err != nil {
		b.Fatal(err)
	}
	c, err := crypto11.Configure(&crypto11.Config{Path: module, TokenLabel: t.TokenLabel, Pin: t.PIN})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	label := []byte("bench/raw-crypto11")
	raw, err := c.GenerateECDSAKeyPairWithLabel(label, label, elliptic.P256())
	if err != nil {
		b.Fatal(err)
	}
	defer raw.Delete()
	rate := func(s crypto.Signer) float64 {
		const n = 2000
		start := time.Now()
		for range n {
			if _, err := s.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
				b.Fatal(err)
			}
		}
		return n / time.Since(start).Seconds()
	}
	var rawRate, backendRate float64
	for range 3 {
		rawRate += rate(raw)
		backendRate += rate(key)
	}
	ratio := backendRate / rawRate
	record("ECDSA P-256 on SoftHSM, pkcs11 backend vs crypto11 directly", fmt.Sprintf("%.2fx (%.0f vs %.0f/s)", ratio, backendRate/3, rawRate/3), ">= 0.8x", ratio >= 0.8)
}
