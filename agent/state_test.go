package agent

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/plinth-id/plinth/hsm"
	"github.com/plinth-id/plinth/hsm/memory"
)

// newState returns a saved agent SVID (self-signed, which is all the state
// file needs) valid until notAfter, with its key in keys.
func newState(t *testing.T, keys hsm.KeyManager, notAfter time.Time) *state {
	t.Helper()
	key, err := keys.GenerateKey(context.Background(), "agent-svid-A", hsm.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("spiffe://example.org/spire/agent/join_token/abc")
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter, URIs: []*url.URL{u}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &state{KeyID: "agent-svid-A", key: key, chain: []*x509.Certificate{cert}}
}

func TestStateRoundTrip(t *testing.T) {
	dir, keys := t.TempDir(), memory.New()
	st := newState(t, keys, time.Now().Add(time.Hour))
	if err := saveState(dir, st); err != nil {
		t.Fatal(err)
	}
	got, err := loadState(context.Background(), dir, keys)
	if err != nil || got == nil {
		t.Fatalf("loadState = %v, %v", got, err)
	}
	if got.id().String() != "spiffe://example.org/spire/agent/join_token/abc" {
		t.Fatalf("id = %s", got.id())
	}
	fi, _ := os.Stat(filepath.Join(dir, stateFile))
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestStateNeedsAttestation(t *testing.T) {
	ctx := context.Background()
	t.Run("no file", func(t *testing.T) {
		if st, err := loadState(ctx, t.TempDir(), memory.New()); st != nil || err != nil {
			t.Fatalf("loadState = %v, %v; want nil, nil", st, err)
		}
	})
	t.Run("expired", func(t *testing.T) {
		dir, keys := t.TempDir(), memory.New()
		saveState(dir, newState(t, keys, time.Now().Add(-time.Minute)))
		if st, err := loadState(ctx, dir, keys); st != nil || err != nil {
			t.Fatalf("loadState = %v, %v; want nil, nil", st, err)
		}
	})
	t.Run("key gone (memory key manager after restart)", func(t *testing.T) {
		dir := t.TempDir()
		saveState(dir, newState(t, memory.New(), time.Now().Add(time.Hour)))
		if st, err := loadState(ctx, dir, memory.New()); st != nil || err != nil {
			t.Fatalf("loadState = %v, %v; want nil, nil", st, err)
		}
	})
}

func TestStateCorrupt(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name, content, want string
	}{
		{"garbage", "not json", "is corrupt (not valid JSON"},
		{"empty record", "{}", "is corrupt (missing key or certificate"},
		{"bad certificate", `{"key_id":"agent-svid-A","chain":["AAAA"]}`, "is corrupt (bad certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, stateFile)
			os.WriteFile(path, []byte(tt.content), 0o600)
			_, err := loadState(ctx, dir, memory.New())
			if err == nil || !strings.Contains(err.Error(), "agent: agent data "+path+" "+tt.want) || !strings.Contains(err.Error(), "move it aside to attest again") {
				t.Fatalf("loadState = %v, want an error containing %q and what to do", err, tt.want)
			}
			if data, _ := os.ReadFile(path); string(data) != tt.content {
				t.Fatal("the corrupt file was changed")
			}
		})
	}
	t.Run("key does not match", func(t *testing.T) {
		dir, keys := t.TempDir(), memory.New()
		saveState(dir, newState(t, keys, time.Now().Add(time.Hour)))
		keys.GenerateKey(ctx, "agent-svid-A", hsm.ECP256) // replaced behind the agent's back
		_, err := loadState(ctx, dir, keys)
		if err == nil || !strings.Contains(err.Error(), "agent key does not match the saved SVID") {
			t.Fatalf("loadState = %v, want a key mismatch error", err)
		}
	})
}
