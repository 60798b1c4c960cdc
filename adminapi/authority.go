package adminapi

import (
	"context"
	"time"

	"google.golang.org/grpc"
)

// AuthorityService shows the CA's authorities with where their keys live,
// which SPIRE's LocalAuthority API cannot carry.
const AuthorityService = "plinth.server.ca.v1.Authority"

// AuthorityListMethod is its one method.
const AuthorityListMethod = "/" + AuthorityService + "/List"

// Authority is one X.509 or JWT authority.
type Authority struct {
	Kind      string    `json:"kind"` // x509 | jwt
	ID        string    `json:"authority_id"`
	Status    string    `json:"status"` // active | prepared | old
	Slot      string    `json:"slot"`
	KeyID     string    `json:"key_id,omitempty"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	Tainted   bool      `json:"tainted,omitempty"`
	// Provenance: the key manager's evidence (absent once the key is gone).
	Backend         string            `json:"backend,omitempty"`
	Location        string            `json:"location,omitempty"`
	GeneratedInside bool              `json:"generated_inside,omitempty"`
	NonExtractable  bool              `json:"non_extractable,omitempty"`
	Attributes      map[string]string `json:"attributes,omitempty"`
}

// AuthorityListRequest selects a kind.
type AuthorityListRequest struct {
	Kind string `json:"kind"`
}

// AuthorityListResponse lists the kind's authorities, newest first.
type AuthorityListResponse struct {
	Authorities []Authority `json:"authorities"`
}

// AuthorityServer is implemented by the server's handler.
type AuthorityServer interface {
	List(context.Context, *AuthorityListRequest) (*AuthorityListResponse, error)
}

// AuthorityServiceDesc registers an AuthorityServer on a grpc.Server.
var AuthorityServiceDesc = grpc.ServiceDesc{
	ServiceName: AuthorityService,
	HandlerType: (*AuthorityServer)(nil),
	Methods: []grpc.MethodDesc{
		method("List", AuthorityListMethod, func(ctx context.Context, s AuthorityServer, req *AuthorityListRequest) (any, error) {
			return s.List(ctx, req)
		}),
	},
	Metadata: "plinth/server/ca/v1/authority.proto",
}

// Authorities lists the authorities of a kind.
func (c *Client) Authorities(ctx context.Context, kind string) (*AuthorityListResponse, error) {
	resp := new(AuthorityListResponse)
	return resp, c.call(ctx, AuthorityListMethod, &AuthorityListRequest{Kind: kind}, resp)
}

// AgentService shows what SPIRE's Agent API cannot: the evidence of an
// agent's last accepted attestation and the latest decisions about it
// (accepted or refused, with the reason).
const AgentService = "plinth.server.agent.v1.AgentDetails"

// AgentDetailsMethod is its one method.
const AgentDetailsMethod = "/" + AgentService + "/Get"

// AgentDetailsRequest names an agent by SPIFFE ID.
type AgentDetailsRequest struct {
	ID string `json:"id"`
}

// Decision is one audit record.
type Decision struct {
	Time     time.Time         `json:"time"`
	Kind     string            `json:"kind"`
	Decision string            `json:"decision"`
	Reason   string            `json:"reason"`
	Details  map[string]string `json:"details,omitempty"`
}

// AgentDetails is the evidence (empty for a node never accepted) and the
// newest decisions first.
type AgentDetails struct {
	Attested  bool              `json:"attested"`
	Evidence  map[string]string `json:"evidence,omitempty"`
	Decisions []Decision        `json:"decisions"`
}

// AgentServer is implemented by the server's handler.
type AgentServer interface {
	Get(context.Context, *AgentDetailsRequest) (*AgentDetails, error)
}

// AgentServiceDesc registers an AgentServer on a grpc.Server.
var AgentServiceDesc = grpc.ServiceDesc{
	ServiceName: AgentService,
	HandlerType: (*AgentServer)(nil),
	Methods: []grpc.MethodDesc{
		method("Get", AgentDetailsMethod, func(ctx context.Context, s AgentServer, req *AgentDetailsRequest) (any, error) {
			return s.Get(ctx, req)
		}),
	},
	Metadata: "plinth/server/agent/v1/details.proto",
}

// AgentDetails returns an agent's evidence and recent decisions.
func (c *Client) AgentDetails(ctx context.Context, id string) (*AgentDetails, error) {
	resp := new(AgentDetails)
	return resp, c.call(ctx, AgentDetailsMethod, &AgentDetailsRequest{ID: id}, resp)
}
