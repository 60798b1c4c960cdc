package tpm_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/plinth-id/plinth/attestors"
	tpmattestor "github.com/plinth-id/plinth/attestors/tpm"
	"github.com/plinth-id/plinth/attestors/tpm/tpmagent"
	"github.com/plinth-id/plinth/conf"
	"github.com/plinth-id/plinth/simulator"
	"github.com/plinth-id/plinth/tpm/verify"
)

// bootRig is a rig whose simulated TPM measured a Secure Boot GRUB boot,
// whose agent sends that log, and whose server holds a boot policy.
func bootRig(t *testing.T, policies string, required string, audit bool) (*rig, []byte) {
	t.Helper()
	r := newRig(t, tpmattestor.ModeEKCert, nil)
	raw := simulator.BuildBootLog(simulator.BootConfig{
		Firmware: "Test Firmware 1.0", SecureBoot: true, BootApps: [][]byte{[]byte("shim"), []byte("grub")},
		Loader: "grub", Kernel: []byte("kernel"), KernelPath: "/vmlinuz", Cmdline: "ro quiet",
	})
	if err := simulator.ExtendEventLog(t.Context(), r.sim.TPM, raw); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(r.dir, "eventlog.bin")
	os.WriteFile(logPath, raw, 0o600)
	var err error
	if r.agent, err = tpmagent.New(tpmagent.Config{TPM: r.sim.TPM, DataDir: r.dir, EventLogPath: logPath}); err != nil {
		t.Fatal(err)
	}
	ps, err := conf.ParseBootPolicies("policy.hcl", []byte(policies))
	if err != nil {
		t.Fatal(err)
	}
	r.server, err = tpmattestor.NewServer(tpmattestor.ServerConfig{
		TrustDomain: td, Mode: tpmattestor.ModeEKCert, EKCerts: r.ekCerts,
		MeasuredBoot: &tpmattestor.MeasuredBoot{Policies: ps, Required: required, Audit: audit, ReattestInterval: 10 * time.Minute},
	})
	if err != nil {
		t.Fatal(err)
	}
	return r, raw
}

// bootPolicies are the server's policies for bootRig's boot.
var bootPolicies = fmt.Sprintf(`
policy "secureboot" {
  secure_boot = true
}
policy "strict" {
  secure_boot = true
  boot_apps = [%[1]q, %[2]q]
  kernel_cmdlines = ["/vmlinuz ro quiet"]
}
policy "debug" {
  boot_apps = [%[1]q, %[2]q]
  kernel_cmdlines = ["/vmlinuz ro debug"]
}
`, sha256hex("shim"), sha256hex("grub"))

func sha256hex(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }

func selectorSet(res *attestors.Result) map[string]bool {
	out := map[string]bool{}
	for _, s := range res.Selectors {
		out[s.Type+":"+s.Value] = true
	}
	return out
}

func TestMeasuredBootAttestation(t *testing.T) {
	r, _ := bootRig(t, bootPolicies, "strict", false)
	res, err := r.attest(t, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	sels := selectorSet(res)
	for _, want := range []string{"tpm:policy:secureboot", "tpm:policy:strict", "tpm:secureboot:true", "tpm:firmware:Test Firmware 1.0", "tpm:kernel_cmdline_sha256:"} {
		found := false
		for s := range sels {
			found = found || strings.HasPrefix(s, want)
		}
		if !found {
			t.Errorf("missing selector %s in %v", want, sels)
		}
	}
	if sels["tpm:policy:debug"] {
		t.Error("policy debug should not pass")
	}
	if res.ReattestInterval != 10*time.Minute || res.Evidence["boot_policies_passed"] != "secureboot,strict" || res.Evidence[tpmattestor.EvidenceBootState] == "" {
		t.Errorf("interval %v evidence %v", res.ReattestInterval, res.Evidence)
	}
	var st verify.BootState
	if err := json.Unmarshal([]byte(res.Evidence[tpmattestor.EvidenceBootState]), &st); err != nil || !slices.Equal(st.KernelCmdlines, []string{"/vmlinuz ro quiet"}) {
		t.Errorf("stored boot state %+v (%v)", st, err)
	}
}

func TestMeasuredBootRefusals(t *testing.T) {
	tests := []struct {
		name     string
		required string
		audit    bool
		edit     func(c *tpmattestor.Challenge, r *tpmattestor.Response)
		want     string // "" for accepted
	}{
		{name: "required policy fails", required: "debug",
			want: `measured boot: boot policy debug: kernel command line "/vmlinuz ro quiet" is not allowed`},
		{name: "audit mode records and accepts", required: "debug", audit: true},
		{name: "audit mode records a log that does not replay", required: "strict", audit: true, edit: func(_ *tpmattestor.Challenge, r *tpmattestor.Response) {
			r.EventLog = simulator.BuildBootLog(simulator.BootConfig{Firmware: "other", Loader: "grub", Kernel: []byte("k")})
		}},
		{name: "no event log", required: "strict", edit: func(_ *tpmattestor.Challenge, r *tpmattestor.Response) { r.EventLog = nil },
			want: `measured boot: the agent sent no event log (set event_log_path in the agent's NodeAttestor "tpm", and check that securityfs is mounted)`},
		{name: "log of another boot", required: "strict", edit: func(_ *tpmattestor.Challenge, r *tpmattestor.Response) {
			r.EventLog = simulator.BuildBootLog(simulator.BootConfig{Firmware: "Test Firmware 1.0", SecureBoot: true, Loader: "grub", Kernel: []byte("kernel"), Cmdline: "ro quiet"})
		}, want: "measured boot: verify: event log: PCR 4 does not replay in bank SHA-1: "},
		{name: "garbage log", required: "strict", edit: func(_ *tpmattestor.Challenge, r *tpmattestor.Response) { r.EventLog = []byte("garbage") },
			want: "measured boot: verify: event log: event 0: truncated at byte 0 (want 28 more, 7 left)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := bootRig(t, bootPolicies, tc.required, tc.audit)
			res, err := r.attest(t, nil, tc.edit)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if f := res.Evidence["measured_boot_audit_failure"]; !strings.Contains(f, "boot policy debug: kernel command line") && !strings.Contains(f, "PCR 0 does not replay") {
					t.Fatalf("audit evidence %v", res.Evidence)
				}
				sels := selectorSet(res)
				if sels["tpm:policy:debug"] || sels["tpm:policy:strict"] != (tc.edit == nil) || sels["tpm:secureboot:true"] != (tc.edit == nil) {
					t.Fatalf("audit-mode selectors %v: only what was proven and passed", sels)
				}
				return
			}
			var dq *attestors.Disqualification
			if err == nil || !errors.As(err, &dq) || !errors.Is(err, attestors.ErrRejected) {
				t.Fatalf("got %v, want a disqualification", err)
			}
			prefix := "attestation rejected: EK " + r.ekHash + ": "
			if !strings.HasPrefix(err.Error(), prefix+tc.want) {
				t.Fatalf("got  %v\nwant %s%s", err, prefix, tc.want)
			}
			if dq.ID.String() != "spiffe://example.org/spire/agent/tpm/"+r.ekHash {
				t.Fatalf("disqualified %s", dq.ID)
			}
		})
	}
}

func TestMeasuredBootNeedsAPolicy(t *testing.T) {
	_, err := tpmattestor.NewServer(tpmattestor.ServerConfig{TrustDomain: td, Mode: tpmattestor.ModeEnrolled,
		Enrolled:     func(context.Context, string) (bool, error) { return true, nil },
		MeasuredBoot: &tpmattestor.MeasuredBoot{Required: "prod"}})
	want := `tpm: measured boot needs a policy every node must pass (no policy named "prod"); there is no accept-all default`
	if err == nil || err.Error() != want {
		t.Fatalf("got %v, want %s", err, want)
	}
}
