// Package attest is the agent's side of node attestation and agent-SVID
// renewal over SPIRE's agent.v1 API: it sends the attestor's payload and a
// CSR, answers challenges, and returns the agent SVID.
package attest

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/plinth-id/plinth/attestors"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
)

// SVID is an agent SVID as issued by the server.
type SVID struct {
	Chain        []*x509.Certificate
	Reattestable bool
}

// Attest runs one attestation with a over conn and returns the agent SVID
// for key.
func Attest(ctx context.Context, conn grpc.ClientConnInterface, a attestors.AgentAttestor, key crypto.Signer) (*SVID, error) {
	payload, err := a.Payload(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("attest: could not build %s evidence: %w", a.Name(), err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, fmt.Errorf("attest: could not create CSR: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := agentv1.NewAgentClient(conn).AttestAgent(ctx)
	if err != nil {
		return nil, fmt.Errorf("attest: could not open attestation stream: %w", err)
	}
	err = stream.Send(&agentv1.AttestAgentRequest{Step: &agentv1.AttestAgentRequest_Params_{Params: &agentv1.AttestAgentRequest_Params{
		Data:   &types.AttestationData{Type: a.Name(), Payload: payload},
		Params: &agentv1.AgentX509SVIDParams{Csr: csr},
	}}})
	if err != nil {
		return nil, fmt.Errorf("attest: could not send evidence: %w", recvErr(stream, err))
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return nil, fmt.Errorf("attest: server refused attestation: %w", err)
		}
		switch step := resp.Step.(type) {
		case *agentv1.AttestAgentResponse_Challenge:
			answer, err := a.Respond(ctx, step.Challenge)
			if err != nil {
				return nil, fmt.Errorf("attest: could not answer %s challenge: %w", a.Name(), err)
			}
			if err := stream.Send(&agentv1.AttestAgentRequest{Step: &agentv1.AttestAgentRequest_ChallengeResponse{ChallengeResponse: answer}}); err != nil {
				return nil, fmt.Errorf("attest: could not send challenge response: %w", recvErr(stream, err))
			}
		case *agentv1.AttestAgentResponse_Result_:
			chain, err := parseChain(step.Result.GetSvid().GetCertChain(), key)
			if err != nil {
				return nil, err
			}
			stream.CloseSend()
			return &SVID{Chain: chain, Reattestable: step.Result.Reattestable}, nil
		default:
			return nil, errors.New("attest: server sent an empty attestation response")
		}
	}
}

// recvErr returns the server's status when a send failed because the server
// ended the stream (io.EOF on Send hides the real reason).
func recvErr(stream grpc.ClientStream, sendErr error) error {
	var m agentv1.AttestAgentResponse
	if err := stream.RecvMsg(&m); err != nil {
		return err
	}
	return sendErr
}

// Renew asks for a new agent SVID for key, authenticating with the current
// SVID (conn must present it).
func Renew(ctx context.Context, conn grpc.ClientConnInterface, key crypto.Signer) ([]*x509.Certificate, error) {
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, fmt.Errorf("attest: could not create CSR: %w", err)
	}
	resp, err := agentv1.NewAgentClient(conn).RenewAgent(ctx, &agentv1.RenewAgentRequest{Params: &agentv1.AgentX509SVIDParams{Csr: csr}})
	if err != nil {
		return nil, fmt.Errorf("attest: could not renew agent SVID: %w", err)
	}
	return parseChain(resp.GetSvid().GetCertChain(), key)
}

// parseChain parses the issued chain and checks it certifies key.
func parseChain(ders [][]byte, key crypto.Signer) ([]*x509.Certificate, error) {
	if len(ders) == 0 {
		return nil, errors.New("attest: server returned no agent SVID")
	}
	chain := make([]*x509.Certificate, len(ders))
	for i, d := range ders {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			return nil, fmt.Errorf("attest: server returned a malformed agent SVID: %w", err)
		}
		chain[i] = c
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if pk, ok := chain[0].PublicKey.(equaler); !ok || !pk.Equal(key.Public()) {
		return nil, errors.New("attest: server returned an agent SVID for a different key")
	}
	return chain, nil
}
