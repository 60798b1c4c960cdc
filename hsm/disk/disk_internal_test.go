package disk

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/plinth-id/plinth/hsm"
)

// TestFailedWriteKeepsFile fails a write before each of its steps and checks
// that the keys file, and the keys in memory, are as they were: a crash at
// that point would leave the same state. It runs as root too, unlike the
// read-only directory test in disk_test.go.
func TestFailedWriteKeepsFile(t *testing.T) {
	ops := []struct {
		name string
		do   func(ctx context.Context, m *Manager) error
		want string
	}{
		{"replace", func(ctx context.Context, m *Manager) error {
			_, err := m.GenerateKey(ctx, "x509-ca-A", hsm.ECP384)
			return err
		}, `disk: could not store key "x509-ca-A": could not write keys file: injected failure before `},
		{"add", func(ctx context.Context, m *Manager) error {
			_, err := m.GenerateKey(ctx, "x509-ca-B", hsm.ECP256)
			return err
		}, `disk: could not store key "x509-ca-B": could not write keys file: injected failure before `},
		{"delete", func(ctx context.Context, m *Manager) error {
			return m.DeleteKey(ctx, "x509-ca-A")
		}, `disk: could not delete key "x509-ca-A": could not write keys file: injected failure before `},
	}
	for _, step := range []string{"write", "sync", "rename"} {
		for _, op := range ops {
			t.Run(step+"/"+op.name, func(t *testing.T) {
				ctx := t.Context()
				dir := t.TempDir()
				path := filepath.Join(dir, "keys.json")
				m, err := New(path)
				if err != nil {
					t.Fatal(err)
				}
				a, err := m.GenerateKey(ctx, "x509-ca-A", hsm.ECP256)
				if err != nil {
					t.Fatal(err)
				}
				before, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}

				m.failWrite = func(s string) error {
					if s == step {
						return errors.New("injected failure before " + s)
					}
					return nil
				}
				if err := op.do(ctx, m); err == nil || err.Error() != op.want+step {
					t.Errorf("got error %v, want %s", err, op.want+step)
				}

				if after, err := os.ReadFile(path); err != nil || !bytes.Equal(after, before) {
					t.Errorf("a failed write changed the keys file (%v)", err)
				}
				entries, err := os.ReadDir(dir)
				if err != nil {
					t.Fatal(err)
				}
				if len(entries) != 1 {
					var names []string
					for _, e := range entries {
						names = append(names, e.Name())
					}
					t.Errorf("directory holds %s, want only keys.json", strings.Join(names, ", "))
				}
				reopened, err := New(path)
				if err != nil {
					t.Fatal(err)
				}
				for name, v := range map[string]*Manager{"memory": m, "disk": reopened} {
					assertOnlyKey(t, name, v, a.Public())
				}

				m.failWrite = nil
				if err := op.do(ctx, m); err != nil {
					t.Errorf("once writes work again: %v", err)
				}
			})
		}
	}
}

func assertOnlyKey(t *testing.T, name string, m *Manager, pub crypto.PublicKey) {
	t.Helper()
	keys, err := m.ListKeys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys[0].ID() != "x509-ca-A" || keys[0].Type() != hsm.ECP256 ||
		!keys[0].Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(pub) {
		t.Errorf("%s: a failed write changed the keys", name)
	}
}
