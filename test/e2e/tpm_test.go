package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/plinth-id/plinth/simulator"
	"github.com/plinth-id/plinth/test/harness"
	"github.com/plinth-id/plinth/tpm/verify"
)

// swtpmNode is a node whose TPM is a swtpm with an EK certificate from a
// private swtpm-localca.
type swtpmNode struct {
	tpm    *simulator.SWTPM
	caPEM  string // path of the local CA bundle
	ekHash string
}

func startSWTPM(t *testing.T) *swtpmNode { return startSWTPMAt(t, 0) }

// startSWTPMAt starts the swtpm at a startup locality (0, or 3 as H-CRTM
// firmware does).
func startSWTPMAt(t *testing.T, locality int) *swtpmNode {
	t.Helper()
	dir, err := os.MkdirTemp("", "swtpm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	st, err := simulator.ProvisionSWTPM(filepath.Join(dir, "p"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "r"), 0o700); err != nil {
		t.Fatal(err)
	}
	sw, err := simulator.StartSWTPMAt(t.Context(), st, filepath.Join(dir, "r"), locality)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sw.Stop() })
	n := &swtpmNode{tpm: sw, caPEM: filepath.Join(dir, "ek-ca.pem")}
	if err := os.WriteFile(n.caPEM, st.CAPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	// Read the EK the agent will present (swtpm serves one client at a
	// time: close before the agent starts).
	dev, err := sw.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	ek, err := dev.EK(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	pub, err := verify.ParsePublic(ek.Public)
	if err != nil {
		t.Fatal(err)
	}
	if n.ekHash, err = verify.EKHash(pub); err != nil {
		t.Fatal(err)
	}
	return n
}

// tpmServer starts a server with NodeAttestor "tpm" in the given mode.
func tpmServer(t *testing.T, n *swtpmNode, mode, extra string) *harness.Server {
	t.Helper()
	s := harness.NewServerWithPlugins(t, bin.dir, extra, `    NodeAttestor "tpm" {
        plugin_data {
            ek_ca_path = "`+n.caPEM+`"
            enrollment = "`+mode+`"
        }
    }
`)
	s.StartReady(t)
	// Workloads hang under NodeID; the node is whoever holds this EK.
	s.MustCLI(t, "entry create", "-node", "-spiffeID", harness.NodeID, "-selector", "tpm:ek_hash:"+n.ekHash)
	return s
}

func tpmAgent(t *testing.T, s *harness.Server, n *swtpmNode) *harness.Agent {
	t.Helper()
	return s.NewAgentWithPlugins(t, time.Second, `    NodeAttestor "tpm" {
        plugin_data {
            swtpm_socket = "`+n.tpm.Socket+`"
        }
    }
    KeyManager "tpm" {
        plugin_data {
            directory = "%[1]s/data"
        }
    }
`)
}

// A node attests with its swtpm's EK certificate, no secret given to it,
// and its workloads get SVIDs; restarting the agent keeps its AK and key.
func TestTPMAttestationWithEKCertificate(t *testing.T) {
	n := startSWTPM(t)
	s := tpmServer(t, n, "ek_cert", "")
	s.CreateEntry(t, testID, selfSelectors(t)...)
	a := tpmAgent(t, s, n)
	a.StartReady(t, "")
	a.WaitSVIDs(t, testID)

	agents := s.Agents(t)
	want := "spiffe://example.org/spire/agent/tpm/" + n.ekHash
	if len(agents) != 1 || agents[0].SPIFFEID() != want {
		t.Fatalf("agents = %+v, want one: %s", agents, want)
	}
	shown := s.MustCLI(t, "agent show", "-spiffeID", want)
	for _, sel := range []string{"tpm:ek_hash:" + n.ekHash, "tpm:ak_alg:ecc-p256", "tpm:ek_cert_issuer:", "tpm:pcr:sha256:7:"} {
		if !strings.Contains(shown, sel) {
			t.Errorf("agent show lacks selector %s:\n%s", sel, shown)
		}
	}

	// Restart: the agent resumes with its saved SVID, its TPM key and AK.
	a.Proc.MustStop(t)
	a.StartReady(t, "")
	a.WaitSVIDs(t, testID)
	if got := s.Agents(t); len(got) != 1 {
		t.Fatalf("%d agents after an agent restart, want 1", len(got))
	}
}

// In enrolled mode an unknown EK is refused; once enrolled it attests, it
// re-attests with a fresh quote at every renewal, and once unenrolled its
// next re-attestation is refused, so it loses its identity.
func TestTPMEnrollmentAndReattestation(t *testing.T) {
	n := startSWTPM(t)
	s := tpmServer(t, n, "enrolled", `    agent_ttl = "6s"`+"\n")
	s.CreateEntry(t, testID, selfSelectors(t)...)
	a := tpmAgent(t, s, n)

	p := a.Start(t, "")
	if code := p.WaitExit(t, 30*time.Second); code == 0 {
		t.Fatal("an agent with an unenrolled EK started")
	}
	if out := p.Output(); !strings.Contains(out, "EK "+n.ekHash+": EK is not enrolled") {
		t.Fatalf("the refused agent does not say why:\n%s", out)
	}

	// `agent show` says why the node was refused, though it never attested.
	agentID := "spiffe://example.org/spire/agent/tpm/" + n.ekHash
	stdout, _, _ := s.CLI("agent show", "-spiffeID", agentID)
	if !strings.Contains(stdout, "No attested agent") || !strings.Contains(stdout, "deny") || !strings.Contains(stdout, "EK is not enrolled") {
		t.Fatalf("agent show does not explain the refusal:\n%s", stdout)
	}

	s.MustCLI(t, "tpm enroll", "-ek-hash", n.ekHash, "-comment", "rack 7")
	if out := s.MustCLI(t, "tpm list"); !strings.Contains(out, n.ekHash) || !strings.Contains(out, "rack 7") {
		t.Fatalf("tpm list:\n%s", out)
	}
	a.StartReady(t, "")
	a.WaitSVIDs(t, testID)
	if shown := s.MustCLI(t, "agent show", "-spiffeID", agentID); !strings.Contains(shown, "ek_trust") || !strings.Contains(shown, "enrolled") {
		t.Fatalf("agent show lacks the evidence:\n%s", shown)
	}

	// The agent SVID lives 6 s: the agent re-attests at half life.
	if err := harness.Eventually(15*time.Second, func() error {
		if strings.Count(a.Proc.Output(), `msg="node attested"`) < 2 {
			return errNotYet
		}
		return nil
	}); err != nil {
		t.Fatalf("no re-attestation at renewal:\n%s", a.Proc.Output())
	}

	s.MustCLI(t, "tpm unenroll", "-ek-hash", n.ekHash)
	if err := harness.Eventually(15*time.Second, func() error {
		if !strings.Contains(a.Proc.Output(), "EK "+n.ekHash+": EK is not enrolled") {
			return errNotYet
		}
		return nil
	}); err != nil {
		t.Fatalf("re-attestation after unenroll was not refused:\n%s", a.Proc.Output())
	}
	// The server issues nothing more: the agent's SVID runs out.
	var exp int64
	for _, ag := range s.Agents(t) {
		exp = ag.ExpiresAt
	}
	if time.Until(time.Unix(exp, 0)) > 6*time.Second {
		t.Fatalf("agent SVID expires at %v, after unenrolling it should run out within its 6 s TTL", time.Unix(exp, 0))
	}
}

type notYet struct{}

func (notYet) Error() string { return "not yet" }

var errNotYet = notYet{}

// Composite evidence: the agent presents a join token (primary: the agent
// ID) and its TPM quote in one attestation; the selectors come from both and
// the agent SVID is bound to the TPM-resident key.
func TestCompositeJoinTokenAndTPM(t *testing.T) {
	n := startSWTPM(t)
	s := harness.NewServerWithPlugins(t, bin.dir, "", `    NodeAttestor "tpm" {
        plugin_data {
            ek_ca_path = "`+n.caPEM+`"
        }
    }
`)
	s.StartReady(t)
	a := s.NewAgentWithPlugins(t, time.Second, `    NodeAttestor "join_token" {
        plugin_data {}
    }
    NodeAttestor "tpm" {
        plugin_data {
            swtpm_socket = "`+n.tpm.Socket+`"
        }
    }
    KeyManager "tpm" {
        plugin_data {
            directory = "%[1]s/data"
        }
    }
`)
	token, _ := s.JoinToken(t, 10*time.Minute)
	s.CreateEntry(t, testID, selfSelectors(t)...)
	a.StartReady(t, token)
	a.WaitSVIDs(t, testID)
	want := "spiffe://example.org/spire/agent/join_token/" + token
	shown := s.MustCLI(t, "agent show", "-spiffeID", want, "-output", "json")
	for _, sel := range []string{`"attestation_type":"composite"`, "ek_hash:" + n.ekHash} {
		if !strings.Contains(strings.ReplaceAll(shown, " ", ""), sel) {
			t.Fatalf("agent show lacks %s:\n%s", sel, shown)
		}
	}
}
