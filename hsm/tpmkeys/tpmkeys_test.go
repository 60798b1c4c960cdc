package tpmkeys_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/plinth-id/plinth/hsm"
	"github.com/plinth-id/plinth/hsm/tpmkeys"
	"github.com/plinth-id/plinth/simulator"
)

// The in-process simulator is a process-wide singleton: these tests do not
// run in parallel.
func TestKeysLiveInTheTPM(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	state := filepath.Join(dir, "sim.state")
	sim, err := simulator.OpenInProcess(state)
	if err != nil {
		t.Fatal(err)
	}
	m, err := tpmkeys.New(sim.TPM, filepath.Join(dir, "keys"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.GenerateKey(ctx, "k", hsm.RSA2048); err == nil || err.Error() != "tpmkeys: key type rsa-2048 is not supported (the TPM key manager makes ec-p256 keys)" {
		t.Fatalf("GenerateKey rsa-2048 = %v", err)
	}
	if _, err := m.GenerateKey(ctx, "../escape", hsm.ECP256); err == nil {
		t.Fatal("a key id with a path was accepted")
	}
	k, err := m.GenerateKey(ctx, "agent-svid-A", hsm.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("hello"))
	sig, err := k.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if !ecdsa.VerifyASN1(k.Public().(*ecdsa.PublicKey), digest[:], sig) {
		t.Fatal("the TPM's signature does not verify")
	}
	// Only wrapped blobs are on disk: no private key material.
	b, err := os.ReadFile(filepath.Join(dir, "keys", "agent-svid-A.tpmkey"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "PRIVATE KEY") {
		t.Fatal("a plain private key was written to disk")
	}
	sim.Close()

	// After a restart of the same TPM, the key is found again by its ID.
	sim, err = simulator.OpenInProcess(state)
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	m, _ = tpmkeys.New(sim.TPM, filepath.Join(dir, "keys"))
	again, err := m.GetKey(ctx, "agent-svid-A")
	if err != nil {
		t.Fatal(err)
	}
	if !again.Public().(*ecdsa.PublicKey).Equal(k.Public()) {
		t.Fatal("the reloaded key has another public key")
	}
	if sig, err := again.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil || !ecdsa.VerifyASN1(k.Public().(*ecdsa.PublicKey), digest[:], sig) {
		t.Fatalf("reloaded key cannot sign: %v", err)
	}
	list, err := m.ListKeys(ctx)
	if err != nil || len(list) != 1 || list[0].ID() != "agent-svid-A" {
		t.Fatalf("ListKeys = %v, %v", list, err)
	}
	if err := m.DeleteKey(ctx, "agent-svid-A"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.GetKey(ctx, "agent-svid-A"); !errors.Is(err, hsm.ErrNotFound) {
		t.Fatalf("GetKey after delete = %v, want ErrNotFound", err)
	}
}
