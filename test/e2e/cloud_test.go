package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/plinth-id/plinth/simulator"
	"github.com/plinth-id/plinth/test/harness"
)

// cloudNode runs a server with the given attestor and an agent with its
// agent half, registers this test process under the node's agent ID, and
// checks the workload gets its SVID and the agent its selectors.
func cloudNode(t *testing.T, serverPlugin, agentPlugin, agentID string, wantSelectors ...string) {
	t.Helper()
	s := harness.NewServerWithPlugins(t, bin.dir, "", serverPlugin)
	s.StartReady(t)
	a := s.NewAgentWithPlugins(t, time.Second, agentPlugin+`    KeyManager "disk" {
        plugin_data {
            directory = "%[1]s/data"
        }
    }
`)
	s.MustCLI(t, "entry create", "-parentID", agentID, "-spiffeID", testID.String(), "-selector", selfSelectors(t)[0], "-selector", selfSelectors(t)[1])
	a.StartReady(t, "")
	a.WaitSVIDs(t, testID)
	shown := s.MustCLI(t, "agent show", "-spiffeID", agentID)
	for _, sel := range wantSelectors {
		if !strings.Contains(shown, sel) {
			t.Errorf("agent show lacks %s:\n%s", sel, shown)
		}
	}
	// The same instance cannot attest twice (a replayed document).
	again := s.NewAgentWithPlugins(t, time.Second, agentPlugin+`    KeyManager "disk" {
        plugin_data {
            directory = "%[1]s/data"
        }
    }
`)
	p := again.Start(t, "")
	if code := p.WaitExit(t, 30*time.Second); code == 0 || !strings.Contains(p.Output(), "has already attested") {
		t.Fatalf("a second attestation of the same instance was not refused (exit %d):\n%s", code, p.Output())
	}
}

func TestGCPIIT(t *testing.T) {
	md, err := simulator.NewGCPMetadata(simulator.GCPInstance{ProjectID: "acme-prod", ProjectNumber: 1234, Zone: "europe-west1-b", InstanceID: "5550001", InstanceName: "web-1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(md.Close)
	cloudNode(t, `    NodeAttestor "gcp_iit" {
        plugin_data {
            projectid_allow_list = ["acme-prod"]
            jwks_url = "`+md.JWKSURL()+`"
        }
    }
`, `    NodeAttestor "gcp_iit" {
        plugin_data {
            identity_token_host = "`+strings.TrimPrefix(md.URL(), "http://")+`"
        }
    }
`, "spiffe://example.org/spire/agent/gcp_iit/acme-prod/5550001", "gcp_iit:project-id:acme-prod", "gcp_iit:zone:europe-west1-b", "gcp_iit:instance-name:web-1")
}

func TestAzureMSI(t *testing.T) {
	const tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	md, err := simulator.NewAzureMetadata(simulator.AzureIdentity{TenantID: tenant, PrincipalID: "2b6f4c7e-8a3d-4a59-9d1b-6a1f0e2c3d4e", SubscriptionID: "11111111-2222-3333-4444-555555555555", ResourceGroup: "prod-rg", VMName: "vm-7"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(md.Close)
	cloudNode(t, `    NodeAttestor "azure_msi" {
        plugin_data {
            tenants {
                "`+tenant+`" {
                    jwks_url = "`+md.KeysURL()+`"
                }
            }
        }
    }
`, `    NodeAttestor "azure_msi" {
        plugin_data {
            metadata_url = "`+md.URL()+`"
        }
    }
`, "spiffe://example.org/spire/agent/azure_msi/"+tenant+"/2b6f4c7e-8a3d-4a59-9d1b-6a1f0e2c3d4e", "azure_msi:resource-group:prod-rg", "azure_msi:virtual-machine:vm-7")
}

func TestAWSIID(t *testing.T) {
	imds, err := simulator.NewAWSIMDS(simulator.AWSIdentityDocument{AccountID: "210987654321", Region: "eu-west-1", InstanceID: "i-0abc1234def567890"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(imds.Close)
	cert := filepath.Join(t.TempDir(), "imds-test.pem")
	os.WriteFile(cert, imds.CertPEM(), 0o644)
	cloudNode(t, `    NodeAttestor "aws_iid" {
        plugin_data {
            account_id_allow_list = ["210987654321"]
            extra_cert_files = ["`+cert+`"]
        }
    }
`, `    NodeAttestor "aws_iid" {
        plugin_data {
            ec2_metadata_endpoint = "`+imds.URL()+`"
        }
    }
`, "spiffe://example.org/spire/agent/aws_iid/210987654321/eu-west-1/i-0abc1234def567890", "aws_iid:account:210987654321", "aws_iid:region:eu-west-1")
}

// Composite evidence: an EC2 instance with a (v)TPM presents its instance
// document (primary: the agent ID) and a TPM quote in one attestation.
func TestCompositeAWSAndTPM(t *testing.T) {
	imds, err := simulator.NewAWSIMDS(simulator.AWSIdentityDocument{AccountID: "210987654321", Region: "eu-west-1", InstanceID: "i-0fedcba9876543210"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(imds.Close)
	cert := filepath.Join(t.TempDir(), "imds-test.pem")
	os.WriteFile(cert, imds.CertPEM(), 0o644)
	n := startSWTPM(t)
	s := harness.NewServerWithPlugins(t, bin.dir, "", `    NodeAttestor "aws_iid" {
        plugin_data {
            extra_cert_files = ["`+cert+`"]
        }
    }
    NodeAttestor "tpm" {
        plugin_data {
            ek_ca_path = "`+n.caPEM+`"
        }
    }
`)
	s.StartReady(t)
	agentID := "spiffe://example.org/spire/agent/aws_iid/210987654321/eu-west-1/i-0fedcba9876543210"
	s.MustCLI(t, "entry create", "-parentID", agentID, "-spiffeID", testID.String(), "-selector", selfSelectors(t)[0], "-selector", selfSelectors(t)[1])
	a := s.NewAgentWithPlugins(t, time.Second, `    NodeAttestor "aws_iid" {
        plugin_data {
            ec2_metadata_endpoint = "`+imds.URL()+`"
        }
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
	a.StartReady(t, "")
	a.WaitSVIDs(t, testID)
	shown := s.MustCLI(t, "agent show", "-spiffeID", agentID)
	for _, sel := range []string{"aws_iid:account:210987654321", "tpm:ek_hash:" + n.ekHash, "composite"} {
		if !strings.Contains(shown, sel) {
			t.Errorf("agent show lacks %s:\n%s", sel, shown)
		}
	}
}
