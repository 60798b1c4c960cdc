package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/plinth-id/plinth/simulator"
	"github.com/plinth-id/plinth/test/harness"
)

// A node proves its boot: its swtpm measured a Secure Boot GRUB boot, the
// agent sends the event log, the server replays it and evaluates the boot
// policy; the node entry selects on the policy, not on the EK. The operator
// learns a policy from the node and dry-runs a stricter one. When the node's
// evidence stops matching (its log changes), its next re-attestation, within
// the 2 s interval, disqualifies it: it is evicted and refused.
func TestMeasuredBootEndToEnd(t *testing.T) {
	n := startSWTPM(t)
	boot := simulator.BootConfig{Firmware: "Plinth Test Firmware 1.0", SecureBoot: true,
		BootApps: [][]byte{[]byte("shim"), []byte("grub")}, Loader: "grub", Kernel: []byte("kernel 6.1"), KernelPath: "/vmlinuz", Cmdline: "ro quiet"}
	raw := simulator.BuildBootLog(boot)
	apps := fmt.Sprintf("[%q, %q]", sha256hex("shim"), sha256hex("grub"))
	s, a, logPath := measuredBootNode(t, n, raw, `
policy "prod" {
  secure_boot = true
  boot_apps = `+apps+`
  kernel_cmdlines = ["/vmlinuz ro quiet"]
}
`, "prod", `reattestation_interval = "2s"`)
	dir := t.TempDir()
	strict := filepath.Join(dir, "strict.hcl")
	os.WriteFile(strict, []byte(`
policy "no-quiet" {
  boot_apps = `+apps+`
  kernel_cmdlines = ["/vmlinuz ro"]
}
`), 0o644)

	agentID := "spiffe://example.org/spire/agent/tpm/" + n.ekHash
	shown := s.MustCLI(t, "agent show", "-spiffeID", agentID)
	for _, want := range []string{"tpm:policy:prod", "tpm:secureboot:true", "tpm:firmware:Plinth Test Firmware 1.0", "tpm:kernel_cmdline_sha256:",
		"boot_policies_passed", "kernel_cmdline", "/vmlinuz ro quiet"} {
		if !strings.Contains(shown, want) {
			t.Errorf("agent show lacks %q:\n%s", want, shown)
		}
	}
	if strings.Contains(shown, "boot_state_json") {
		t.Errorf("agent show prints the raw boot state:\n%s", shown)
	}

	learned := s.MustCLI(t, "tpm policy learn", "-agent", agentID, "-name", "fleet")
	for _, want := range []string{`policy "fleet"`, "secure_boot = true", `"/vmlinuz ro quiet"`, `"Plinth Test Firmware 1.0"`} {
		if !strings.Contains(learned, want) {
			t.Errorf("learned policy lacks %q:\n%s", want, learned)
		}
	}
	learnedPath := filepath.Join(dir, "learned.hcl")
	os.WriteFile(learnedPath, []byte(learned), 0o644)
	if out := s.MustCLI(t, "tpm policy test", "-policy", learnedPath); !strings.Contains(out, "0 would fail") || !strings.Contains(out, "pass    "+agentID) {
		t.Errorf("the learned policy does not pass its own node:\n%s", out)
	}
	out := s.MustCLI(t, "tpm policy test", "-policy", strict)
	if !strings.Contains(out, "1 would fail") || !strings.Contains(out, `kernel command line "/vmlinuz ro quiet" is not allowed`) {
		t.Errorf("dry run of a stricter policy:\n%s", out)
	}

	// The node's evidence drifts: its log no longer matches its TPM.
	other := boot
	other.Cmdline = "ro init=/bin/sh"
	os.WriteFile(logPath, simulator.BuildBootLog(other), 0o644)
	if err := harness.Eventually(20*time.Second, func() error {
		if len(s.Agents(t)) != 0 {
			return errNotYet
		}
		return nil
	}); err != nil {
		t.Fatalf("the drifted node was not evicted:\n%s", a.Proc.Output())
	}
	stdout, _, _ := s.CLI("agent show", "-spiffeID", agentID)
	if !strings.Contains(stdout, "disqualified") || !strings.Contains(stdout, "PCR 8 does not replay") {
		t.Fatalf("agent show does not explain the disqualification:\n%s", stdout)
	}
}

// Measured boot without a policy is refused at start: there is no
// accept-all default.
func TestMeasuredBootNeedsAPolicy(t *testing.T) {
	s := harness.NewServerWithPlugins(t, bin.dir, "", `    NodeAttestor "tpm" {
        plugin_data {
            enrollment = "enrolled"
            measured_boot {}
        }
    }
`)
	p := s.Start(t)
	if code := p.WaitExit(t, 10*time.Second); code == 0 {
		t.Fatal("the server started with measured boot and no policy")
	}
	if out := p.Output(); !strings.Contains(out, "measured boot needs a policy: set policy_file and policy (the name of the policy every node must pass); there is no accept-all default") {
		t.Fatalf("the server does not say why it refused to start:\n%s", out)
	}
}

// Real machines' boots reproduced in swtpm: a GCE Ubuntu VM's firmware log
// (three banks, swtpm has two) and a Lenovo workstation's (StartupLocality
// 3) attest through the real binaries against a policy learned from them.
func TestMeasuredBootRealLogs(t *testing.T) {
	for _, tc := range []struct {
		log      string
		locality int
		policy   string
		shown    string
	}{
		{"ubuntu-2104-no-secure-boot", 0, `policy "gce" {
  secure_boot = false
  boot_apps = ["6265b732b005b3f330bcd1843374e5ec6ec5aef27cdb97a23daeb8580abbf526", "b0a836fec2faf4a9bea0e1a5f1945bc86ddc03ac98ce0ae172ed9b1e536d7595"]
  reference "ubuntu-21.04" {
    firmware = ["GCE Virtual Firmware v1"]
    kernel_cmdlines = ["/boot/vmlinuz-5.11.0-1006-gcp root=PARTUUID=6443a6ae-e5e9-4df7-9a06-d1329e50f33c ro console=ttyS0 panic=-1"]
  }
}`, "tpm:firmware:GCE Virtual Firmware v1"},
		{"glinux-alex", 3, `policy "gce" {
  pk_allowed = ["047b74f2835f0c720c0011288dc1aee919036961096391b85b5b41781cc06657"]
}`, "tpm:secureboot:false"},
	} {
		t.Run(tc.log, func(t *testing.T) {
			n := startSWTPMAt(t, tc.locality)
			raw, err := os.ReadFile("../../tpm/verify/testdata/eventlogs/" + tc.log + ".bin")
			if err != nil {
				t.Fatal(err)
			}
			s, _, _ := measuredBootNode(t, n, raw, tc.policy, "gce", "")
			shown := s.MustCLI(t, "agent show", "-spiffeID", "spiffe://example.org/spire/agent/tpm/"+n.ekHash)
			if !strings.Contains(shown, tc.shown) || !strings.Contains(shown, "tpm:policy:gce") {
				t.Fatalf("agent show lacks %s:\n%s", tc.shown, shown)
			}
		})
	}
}

func sha256hex(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }

// measuredBootNode measures raw into n's swtpm, writes it where the agent
// reads it, and starts a server with measured boot (policy file text,
// required policy, extra measured_boot settings) whose node entry selects on
// that policy, and the node's agent, until its workload has an SVID.
func measuredBootNode(t *testing.T, n *swtpmNode, raw []byte, policies, required, extra string) (*harness.Server, *harness.Agent, string) {
	t.Helper()
	dev, err := n.tpm.Open()
	if err != nil {
		t.Fatal(err)
	}
	if err := simulator.ExtendEventLog(t.Context(), dev, raw); err != nil {
		t.Fatal(err)
	}
	dev.Close()
	dir := t.TempDir()
	logPath, policy := filepath.Join(dir, "binary_bios_measurements"), filepath.Join(dir, "boot.hcl")
	os.WriteFile(logPath, raw, 0o644)
	os.WriteFile(policy, []byte(policies), 0o644)
	s := harness.NewServerWithPlugins(t, bin.dir, "", `    NodeAttestor "tpm" {
        plugin_data {
            ek_ca_path = "`+n.caPEM+`"
            measured_boot {
                policy_file = "`+policy+`"
                policy = "`+required+`"
                `+extra+`
            }
        }
    }
`)
	s.StartReady(t)
	s.MustCLI(t, "entry create", "-node", "-spiffeID", harness.NodeID, "-selector", "tpm:policy:"+required)
	s.CreateEntry(t, testID, selfSelectors(t)...)
	a := s.NewAgentWithPlugins(t, time.Second, `    NodeAttestor "tpm" {
        plugin_data {
            swtpm_socket = "`+n.tpm.Socket+`"
            event_log_path = "`+logPath+`"
        }
    }
    KeyManager "tpm" {
        plugin_data {
            directory = "%[1]s/data"
        }
    }
`)
	a.StartReady(t, "")
	a.WaitSVIDs(t, testID)
	return s, a, logPath
}
