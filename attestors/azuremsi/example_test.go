package azuremsi_test

import (
	"context"
	"fmt"
	"log"

	"github.com/plinth-id/plinth/attestors/azuremsi"
	"github.com/plinth-id/plinth/simulator"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// A VM attests with its managed identity's token, here from the fake IMDS,
// whose test key the server trusts only because it is told to.
func Example() {
	ctx := context.Background()
	const tenant = "8a0c4f2e-3b5d-4e6f-9a1b-2c3d4e5f6a7b"
	sim, err := simulator.NewAzureMetadata(simulator.AzureIdentity{
		TenantID: tenant, PrincipalID: "1f2e3d4c-5b6a-4789-8abc-def012345678",
		SubscriptionID: "6d5c4b3a-2918-4706-a5b4-c3d2e1f0a9b8", ResourceGroup: "plinth-rg", VMName: "node-1",
	})
	if err != nil {
		log.Fatal(err)
	}
	defer sim.Close()

	// On the VM.
	agent, err := azuremsi.NewAgent(azuremsi.AgentConfig{MetadataURL: sim.URL()})
	if err != nil {
		log.Fatal(err)
	}
	payload, err := agent.Payload(ctx, nil)
	if err != nil {
		log.Fatal(err)
	}

	// On the server. In production KeysURL is left empty (Microsoft's).
	server, err := azuremsi.NewServer(azuremsi.ServerConfig{
		TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"),
		Tenants:     map[string]azuremsi.TenantConfig{tenant: {KeysURL: sim.KeysURL()}},
		Attested:    func(context.Context, spiffeid.ID) (bool, error) { return false, nil },
	})
	if err != nil {
		log.Fatal(err)
	}
	res, err := server.Attest(ctx, payload, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.AgentID)
	for _, s := range res.Selectors {
		fmt.Println(s)
	}
	// Output:
	// spiffe://example.org/spire/agent/azure_msi/8a0c4f2e-3b5d-4e6f-9a1b-2c3d4e5f6a7b/1f2e3d4c-5b6a-4789-8abc-def012345678
	// azure_msi:principal-id:1f2e3d4c-5b6a-4789-8abc-def012345678
	// azure_msi:resource-group:plinth-rg
	// azure_msi:subscription-id:6d5c4b3a-2918-4706-a5b4-c3d2e1f0a9b8
	// azure_msi:tenant-id:8a0c4f2e-3b5d-4e6f-9a1b-2c3d4e5f6a7b
	// azure_msi:virtual-machine:node-1
	// azure_msi:vm-name:plinth-rg:node-1
}
