package awsiid_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/plinth-id/plinth/attestors/awsiid"
	"github.com/plinth-id/plinth/simulator"
)

// The whole flow against the fake IMDS: the agent reads the document and its
// signature, the server verifies them with the simulator's test certificate
// (trusted only because it is configured) and names the agent.
func Example() {
	imds, err := simulator.NewAWSIMDS(simulator.AWSIdentityDocument{
		AccountID:  "123456789012",
		Region:     "us-west-2",
		InstanceID: "i-0123456789abcdef0",
	})
	if err != nil {
		log.Fatal(err)
	}
	defer imds.Close()

	agent, err := awsiid.NewAgent(awsiid.AgentConfig{Endpoint: imds.URL()})
	if err != nil {
		log.Fatal(err)
	}
	payload, err := agent.Payload(context.Background(), nil)
	if err != nil {
		log.Fatal(err)
	}

	block, _ := pem.Decode(imds.CertPEM())
	testCert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		log.Fatal(err)
	}
	attested := map[string]bool{}
	server, err := awsiid.NewServer(awsiid.ServerConfig{
		TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"),
		Certs:       []*x509.Certificate{testCert},
		Accounts:    []string{"123456789012"},
		Attested: func(_ context.Context, id string) (bool, error) {
			return attested[id], nil
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	res, err := server.Attest(context.Background(), payload, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.AgentID)
	for _, s := range res.Selectors {
		fmt.Println(s)
	}

	// The same document again is a replay.
	attested[res.AgentID.String()] = true
	_, err = server.Attest(context.Background(), payload, nil)
	fmt.Println(err)
	// Output:
	// spiffe://example.org/spire/agent/aws_iid/123456789012/us-west-2/i-0123456789abcdef0
	// aws_iid:account:123456789012
	// aws_iid:az:us-west-2a
	// aws_iid:image:id:ami-0123456789abcdef0
	// aws_iid:instance:id:i-0123456789abcdef0
	// aws_iid:instance:type:t3.micro
	// aws_iid:region:us-west-2
	// attestation rejected: instance i-0123456789abcdef0 has already attested; set allow_reattestation or evict the agent
}
