// Package jointoken is the join_token node attestor, compatible with SPIRE's:
// an operator creates a single-use token (`plinth-server token generate`),
// the agent presents it once, and its ID becomes
// spiffe://<td>/spire/agent/join_token/<token>. No selectors are produced
// and the agent cannot re-attest: it renews with its SVID.
package jointoken

import (
	"context"
	"crypto"
	"errors"
	"strings"

	"github.com/plinth-id/plinth/attestors"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Name is the attestation type on the wire.
const Name = "join_token"

// Errors a Redeem function returns.
var (
	ErrUnknown = errors.New("join token does not exist or has already been used")
	ErrExpired = errors.New("join token expired")
)

// Redeem consumes a token atomically: it succeeds at most once per token,
// and fails with ErrUnknown or ErrExpired.
type Redeem func(ctx context.Context, token string) error

// Server is the server half.
type Server struct {
	td     spiffeid.TrustDomain
	redeem Redeem
}

// NewServer returns the server half for trust domain td.
func NewServer(td spiffeid.TrustDomain, redeem Redeem) *Server {
	return &Server{td: td, redeem: redeem}
}

func (s *Server) Name() string { return Name }

// Attest redeems the token in payload.
func (s *Server) Attest(ctx context.Context, payload []byte, _ attestors.Challenge) (*attestors.Result, error) {
	token := string(payload)
	if token == "" {
		return nil, attestors.Rejectf("join token is empty")
	}
	if strings.ContainsAny(token, "/ \n") || len(token) > 256 {
		return nil, attestors.Rejectf("join token is malformed")
	}
	id, err := spiffeid.FromSegments(s.td, "spire", "agent", Name, token)
	if err != nil {
		return nil, attestors.Rejectf("join token is malformed: %v", err)
	}
	if err := s.redeem(ctx, token); err != nil {
		if errors.Is(err, ErrUnknown) || errors.Is(err, ErrExpired) {
			return nil, attestors.Rejectf("%v", err)
		}
		return nil, err
	}
	return &attestors.Result{AgentID: id, Evidence: map[string]string{"join_token": "redeemed"}}, nil
}

// Agent is the agent half: it presents the token.
type Agent struct{ Token string }

func (a *Agent) Name() string { return Name }

func (a *Agent) Payload(ctx context.Context, _ crypto.Signer) ([]byte, error) {
	if a.Token == "" {
		return nil, errors.New("jointoken: no join token configured; pass -joinToken or set join_token in the agent config")
	}
	return []byte(a.Token), nil
}

func (a *Agent) Respond(ctx context.Context, challenge []byte) ([]byte, error) {
	return nil, errors.New("jointoken: join token attestation has no challenge")
}
