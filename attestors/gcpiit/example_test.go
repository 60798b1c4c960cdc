package gcpiit_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/plinth-id/plinth/attestors/gcpiit"
	"github.com/plinth-id/plinth/simulator"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// A node attests with its identity token, here from the fake metadata
// server, whose test key the server trusts only because it is told to.
func Example() {
	ctx := context.Background()
	sim, err := simulator.NewGCPMetadata(simulator.GCPInstance{
		ProjectID: "plinth-prod", ProjectNumber: 123456789012, Zone: "europe-west1-b",
		InstanceID: "4528923497298347234", InstanceName: "node-1",
	})
	if err != nil {
		log.Fatal(err)
	}
	defer sim.Close()

	// On the node.
	agent, err := gcpiit.NewAgent(gcpiit.AgentConfig{MetadataURL: sim.URL()})
	if err != nil {
		log.Fatal(err)
	}
	payload, err := agent.Payload(ctx, nil)
	if err != nil {
		log.Fatal(err)
	}

	// On the server. In production Keys is left nil (Google's keys).
	keys, err := gcpiit.NewHTTPKeys(gcpiit.HTTPKeysConfig{URL: sim.JWKSURL()})
	if err != nil {
		log.Fatal(err)
	}
	server, err := gcpiit.NewServer(gcpiit.ServerConfig{
		TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"),
		Keys:        keys,
		ProjectIDs:  []string{"plinth-prod"},
		Attested:    func(context.Context, spiffeid.ID) (bool, error) { return false, nil },
		MaxAge:      10 * time.Minute,
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
	// spiffe://example.org/spire/agent/gcp_iit/plinth-prod/4528923497298347234
	// gcp_iit:instance-id:4528923497298347234
	// gcp_iit:instance-name:node-1
	// gcp_iit:project-id:plinth-prod
	// gcp_iit:project-number:123456789012
	// gcp_iit:sa:123456789012-compute@developer.gserviceaccount.com
	// gcp_iit:zone:europe-west1-b
}
