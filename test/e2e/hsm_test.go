package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/plinth-id/plinth/simulator"
	"github.com/plinth-id/plinth/test/harness"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// The CA keys live in a SoftHSM token: `localauthority x509 show` proves it.
// When the token disappears at run time the server stays up, reports
// NOT_SERVING and cannot sign, while agents keep serving their SVIDs; when
// it comes back the server recovers with no restart.
func TestHSMOutageAndRecovery(t *testing.T) {
	dir, err := os.MkdirTemp("", "hsm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	token, err := simulator.StartSoftHSM(dir, "plinth", "4321")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", token.Config) // the server inherits it
	pinFile := filepath.Join(dir, "pin")
	os.WriteFile(pinFile, []byte("4321\n"), 0o600)

	s := harness.NewServerWithPlugins(t, bin.dir, "", `    KeyManager "pkcs11" {
        plugin_data {
            module_path = "`+token.Module+`"
            token_label = "plinth"
            pin_file = "`+pinFile+`"
        }
    }
`)
	s.StartReady(t)
	show := s.MustCLI(t, "localauthority x509 show")
	for _, want := range []string{"pkcs11:token=plinth;object=x509-ca-A", "Generated there: true; cannot be extracted: true", "CKA_NEVER_EXTRACTABLE=true"} {
		if !strings.Contains(show, want) {
			t.Fatalf("localauthority x509 show lacks %q:\n%s", want, show)
		}
	}
	if strings.Contains(s.Proc.Output(), "4321") {
		t.Fatal("the PIN appears in the server's log")
	}
	a := s.StartAgent(t, time.Second)
	s.CreateEntry(t, testID, selfSelectors(t)...)
	a.WaitSVIDs(t, testID)

	// The token disappears.
	if err := os.Rename(token.TokenDir, token.TokenDir+".away"); err != nil {
		t.Fatal(err)
	}
	later := spiffeid.RequireFromString("spiffe://example.org/later")
	s.CreateEntry(t, later, selfSelectors(t)...) // signing it fails
	if err := harness.Eventually(30*time.Second, func() error {
		if _, _, err := s.CLI("healthcheck"); err == nil {
			return fmt.Errorf("the server still reports healthy")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !s.Proc.Running() {
		t.Fatal("the server exited when its HSM went away")
	}
	// Workloads keep their SVIDs.
	ids, err := a.FetchIDs(t.Context())
	if err != nil || !slices.Contains(ids, testID.String()) {
		t.Fatalf("during the outage the agent serves %v, %v; want %s", ids, err, testID)
	}

	// The token comes back: no restart needed.
	if err := os.Rename(token.TokenDir+".away", token.TokenDir); err != nil {
		t.Fatal(err)
	}
	if err := harness.Eventually(90*time.Second, func() error {
		_, stderr, err := s.CLI("healthcheck")
		if err != nil {
			return fmt.Errorf("still unhealthy: %s", stderr)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	a.WaitSVIDs(t, testID, later)
}
