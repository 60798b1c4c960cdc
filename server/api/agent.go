package api

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/plinth-id/plinth/attestors"
	"github.com/plinth-id/plinth/server/authz"
	"github.com/plinth-id/plinth/server/ca"
	"github.com/plinth-id/plinth/server/datastore"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

var errBanned = errors.New("agent is banned")

// maxTokenLen is the longest join token the join_token attestor redeems.
const maxTokenLen = 256

type agentServer struct {
	agentv1.UnimplementedAgentServer
	h *Handlers
}

// AttestAgent runs one node attestation: the first message names the
// attestor and carries its payload and the CSR for the agent SVID; the
// attestor may then exchange any number of challenges.
func (s *agentServer) AttestAgent(stream agentv1.Agent_AttestAgentServer) error {
	h := s.h
	timeout := h.AttestTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(stream.Context(), timeout)
	defer cancel()

	first, err := recv(ctx, stream)
	if err != nil {
		return err
	}
	params := first.GetParams()
	if params == nil || params.Data == nil {
		return status.Error(codes.InvalidArgument, "malformed attestation request: the first message must carry params with attestation data")
	}
	if params.Params == nil || len(params.Params.Csr) == 0 {
		return status.Error(codes.InvalidArgument, "malformed attestation request: missing CSR for the agent SVID")
	}
	csr, err := parseCSR(params.Params.Csr)
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "malformed attestation request: %v", err)
	}
	typ := params.Data.Type
	na, ok := h.NodeAttestors[typ]
	if !ok {
		return status.Errorf(codes.InvalidArgument, "attestation type %q is not enabled on this server (enabled: %s)", typ, strings.Join(h.attestorNames(), ", "))
	}
	challenge := func(ctx context.Context, c []byte) ([]byte, error) {
		if err := stream.Send(&agentv1.AttestAgentResponse{Step: &agentv1.AttestAgentResponse_Challenge{Challenge: c}}); err != nil {
			return nil, fmt.Errorf("could not send challenge: %w", err)
		}
		resp, err := recv(ctx, stream)
		if err != nil {
			return nil, err
		}
		r, ok := resp.Step.(*agentv1.AttestAgentRequest_ChallengeResponse)
		if !ok {
			return nil, errors.New("expected a challenge response")
		}
		return r.ChallengeResponse, nil
	}
	res, err := na.Attest(ctx, params.Data.Payload, challenge)
	if err != nil {
		subject := typ
		var about attestors.Subject
		if errors.As(err, &about) {
			subject = about.AgentID().String()
		}
		h.audit(ctx, "attest", subject, "deny", err.Error(), map[string]string{"attestation_type": typ})
		h.Log.Warn("node attestation refused", "type", typ, "error", err)
		var dq *attestors.Disqualification
		if errors.As(err, &dq) {
			h.disqualify(ctx, dq)
		}
		if errors.Is(err, attestors.ErrRejected) {
			return status.Errorf(codes.PermissionDenied, "failed to attest: %v", err)
		}
		if st, ok := status.FromError(err); ok && st.Code() != codes.Unknown {
			return err
		}
		if ctx.Err() != nil {
			return status.Errorf(codes.DeadlineExceeded, "failed to attest: the agent did not answer in time: %v", err)
		}
		return status.Errorf(codes.Internal, "failed to attest: %v", err)
	}
	agentID := res.AgentID
	if agentID.TrustDomain() != h.TrustDomain || !strings.HasPrefix(agentID.Path(), "/spire/agent/") {
		return status.Errorf(codes.Internal, "attestor %q produced agent ID %q outside %s/spire/agent/", typ, agentID, h.TrustDomain.IDString())
	}
	if res.MustReattest && !res.CanReattest {
		return status.Errorf(codes.Internal, "attestor %q needs its evidence proved at every renewal but says the node cannot attest again", typ)
	}
	if res.BoundKey != nil {
		if k, ok := csr.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(res.BoundKey) {
			reason := "the CSR is for a different key than the one the attestor proved"
			h.audit(ctx, "attest", agentID.String(), "deny", reason, auditable(res.Evidence))
			return status.Errorf(codes.PermissionDenied, "failed to attest: %s", reason)
		}
	}
	ttl := h.AgentTTL
	if iv := res.ReattestInterval; iv > 0 && (ttl == 0 || 2*iv < ttl) {
		ttl = 2 * iv
	}
	chain, err := h.CA.SignX509SVID(ctx, ca.X509Params{ID: agentID, PublicKey: csr.PublicKey, TTL: ttl})
	if err != nil {
		return status.Errorf(codes.Internal, "could not sign agent SVID: %v", err)
	}
	// The ban check and the write are one transaction, so a ban that lands
	// meanwhile is never overwritten.
	_, err = h.Store.UpdateAgent(ctx, agentID.String(), func(old *datastore.Agent) (*datastore.Agent, error) {
		if old != nil && old.Banned {
			return nil, errBanned
		}
		return &datastore.Agent{
			ID:              agentID.String(),
			AttestationType: typ,
			SerialNumber:    chain[0].SerialNumber.String(),
			ExpiresAt:       chain[0].NotAfter.Unix(),
			Selectors:       attestors.SortSelectors(res.Selectors),
			CanReattest:     res.CanReattest,
			Evidence:        res.Evidence,
		}, nil
	})
	if errors.Is(err, errBanned) {
		h.audit(ctx, "attest", agentID.String(), "deny", "agent is banned", auditable(res.Evidence))
		return authz.Denied(types.PermissionDeniedDetails_AGENT_BANNED, "failed to attest: agent %s is banned", agentID)
	}
	if err != nil {
		return status.Errorf(codes.Internal, "could not record agent: %v", err)
	}
	h.audit(ctx, "attest", agentID.String(), "allow", "attested by "+typ, auditable(res.Evidence))
	h.Log.Info("agent attested", "agent_id", agentID.String(), "type", typ, "selectors", len(res.Selectors))
	return stream.Send(&agentv1.AttestAgentResponse{Step: &agentv1.AttestAgentResponse_Result_{Result: &agentv1.AttestAgentResponse_Result{
		Svid:         x509SVIDToProto(chain, agentID, ""),
		Reattestable: res.CanReattest,
	}}})
}

// disqualify ends the identity of a node that proved who it is but no
// longer qualifies: its record is deleted, so its current SVID stops
// working at once and it must attest again (and pass) to get one. SVIDs
// already issued to its workloads expire with their TTL.
func (h *Handlers) disqualify(ctx context.Context, dq *attestors.Disqualification) {
	id := dq.ID.String()
	if a, err := h.Store.GetAgent(ctx, id); err != nil || a.Banned {
		return // not attested, or banned (deleting would lift the ban)
	}
	if err := h.Store.DeleteAgent(context.WithoutCancel(ctx), id); err != nil {
		h.Log.Error("could not evict a disqualified agent", "agent_id", id, "error", err)
		return
	}
	h.audit(ctx, "evict", id, "allow", "disqualified: "+dq.Err.Error(), nil)
	h.Log.Warn("agent disqualified and evicted: its evidence no longer satisfies policy", "agent_id", id, "reason", dq.Err.Error())
}

// auditable is the evidence as the audit log keeps it: without the
// machine-readable "_json" details, kept only with the agent's record.
func auditable(ev map[string]string) map[string]string {
	out := make(map[string]string, len(ev))
	for k, v := range ev {
		if !strings.HasSuffix(k, "_json") {
			out[k] = v
		}
	}
	return out
}

// recv receives one message or fails when ctx ends first, so an agent that
// stops answering cannot hold the stream past the attestation timeout.
func recv(ctx context.Context, stream agentv1.Agent_AttestAgentServer) (*agentv1.AttestAgentRequest, error) {
	type result struct {
		req *agentv1.AttestAgentRequest
		err error
	}
	ch := make(chan result, 1)
	go func() {
		req, err := stream.Recv()
		ch <- result{req, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, status.Errorf(codes.Canceled, "attestation stream ended: %v", r.err)
		}
		return r.req, nil
	case <-ctx.Done():
		return nil, status.Error(codes.DeadlineExceeded, "attestation timed out waiting for the agent")
	}
}

func (h *Handlers) attestorNames() []string {
	return slices.Sorted(maps.Keys(h.NodeAttestors))
}

func parseCSR(der []byte) (*x509.CertificateRequest, error) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("invalid CSR: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("invalid CSR signature: %v", err)
	}
	return csr, nil
}

// RenewAgent signs a new agent SVID for the calling agent. The new serial
// becomes current the first time the agent uses it (see authz).
func (s *agentServer) RenewAgent(ctx context.Context, req *agentv1.RenewAgentRequest) (*agentv1.RenewAgentResponse, error) {
	h := s.h
	caller := authz.CallerFrom(ctx)
	agent := caller.Agent
	if agent.CanReattest {
		return nil, authz.Denied(types.PermissionDeniedDetails_AGENT_MUST_REATTEST, "agent %s must renew by attesting again", agent.ID)
	}
	if req.Params == nil || len(req.Params.Csr) == 0 {
		return nil, status.Error(codes.InvalidArgument, "missing CSR")
	}
	csr, err := parseCSR(req.Params.Csr)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	chain, err := h.CA.SignX509SVID(ctx, ca.X509Params{ID: caller.ID, PublicKey: csr.PublicKey, TTL: h.AgentTTL})
	if err != nil {
		return nil, status.Errorf(codes.Internal, "could not sign agent SVID: %v", err)
	}
	serial := chain[0].SerialNumber.String()
	_, err = h.Store.UpdateAgent(ctx, agent.ID, func(cur *datastore.Agent) (*datastore.Agent, error) {
		// Re-checked in the write transaction: the agent may have been
		// banned or evicted since the call was authorized.
		switch {
		case cur == nil:
			return nil, authz.Denied(types.PermissionDeniedDetails_AGENT_NOT_ATTESTED, "agent %s is not attested (evicted); it must attest again", agent.ID)
		case cur.Banned:
			return nil, authz.Denied(types.PermissionDeniedDetails_AGENT_BANNED, "agent %s is banned", agent.ID)
		}
		cur.NewSerialNumber = serial
		return cur, nil
	})
	if _, ok := status.FromError(err); err != nil && ok {
		return nil, err
	}
	if err != nil {
		return nil, status.Errorf(codes.Internal, "could not record renewed agent SVID: %v", err)
	}
	h.audit(ctx, "renew", agent.ID, "allow", "agent SVID renewed", nil)
	return &agentv1.RenewAgentResponse{Svid: x509SVIDToProto(chain, caller.ID, "")}, nil
}

func (s *agentServer) PostStatus(ctx context.Context, req *agentv1.PostStatusRequest) (*agentv1.PostStatusResponse, error) {
	return &agentv1.PostStatusResponse{}, nil
}

// agentFilter is the filter shared by ListAgents and CountAgents.
type agentFilter interface {
	GetByAttestationType() string
	GetBySelectorMatch() *types.SelectorMatch
	GetByExpiresBefore() string
}

func (h *Handlers) filterAgents(ctx context.Context, f agentFilter, banned, reattest *bool) ([]*datastore.Agent, error) {
	all, err := h.Store.ListAgents(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "could not list agents: %v", err)
	}
	var match *selectorMatch
	var before int64
	if f != nil {
		if m := f.GetBySelectorMatch(); m != nil {
			if match, err = newSelectorMatch(m); err != nil {
				return nil, status.Errorf(codes.InvalidArgument, "invalid selector filter: %v", err)
			}
		}
		if s := f.GetByExpiresBefore(); s != "" {
			t, err := time.Parse(time.RFC3339, s)
			if err != nil {
				return nil, status.Errorf(codes.InvalidArgument, "invalid by_expires_before %q: want RFC 3339", s)
			}
			before = t.Unix()
		}
	}
	out := all[:0]
	for _, a := range all {
		switch {
		case f != nil && f.GetByAttestationType() != "" && a.AttestationType != f.GetByAttestationType():
		case banned != nil && a.Banned != *banned:
		case reattest != nil && a.CanReattest != *reattest:
		case before != 0 && a.ExpiresAt >= before:
		case match != nil && !match.matches(a.Selectors):
		default:
			out = append(out, a)
		}
	}
	return out, nil
}

func (s *agentServer) ListAgents(ctx context.Context, req *agentv1.ListAgentsRequest) (*agentv1.ListAgentsResponse, error) {
	var banned, reattest *bool
	if f := req.Filter; f != nil {
		if f.ByBanned != nil {
			banned = &f.ByBanned.Value
		}
		if f.ByCanReattest != nil {
			reattest = &f.ByCanReattest.Value
		}
	}
	if req.PageSize < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "invalid page_size %d", req.PageSize)
	}
	agents, err := s.h.filterAgents(ctx, req.Filter, banned, reattest)
	if err != nil {
		return nil, err
	}
	resp := &agentv1.ListAgentsResponse{}
	for i, a := range agents {
		if req.PageToken != "" && a.ID <= req.PageToken {
			continue
		}
		resp.Agents = append(resp.Agents, agentToProto(a, req.OutputMask))
		if req.PageSize > 0 && len(resp.Agents) == int(req.PageSize) {
			if i+1 < len(agents) {
				resp.NextPageToken = a.ID
			}
			break
		}
	}
	return resp, nil
}

func (s *agentServer) CountAgents(ctx context.Context, req *agentv1.CountAgentsRequest) (*agentv1.CountAgentsResponse, error) {
	var banned, reattest *bool
	if f := req.Filter; f != nil {
		if f.ByBanned != nil {
			banned = &f.ByBanned.Value
		}
		if f.ByCanReattest != nil {
			reattest = &f.ByCanReattest.Value
		}
	}
	agents, err := s.h.filterAgents(ctx, req.Filter, banned, reattest)
	if err != nil {
		return nil, err
	}
	return &agentv1.CountAgentsResponse{Count: int32(len(agents))}, nil
}

func (s *agentServer) GetAgent(ctx context.Context, req *agentv1.GetAgentRequest) (*types.Agent, error) {
	a, err := s.h.lookupAgent(ctx, req.Id)
	if err != nil {
		return nil, err
	}
	return agentToProto(a, req.OutputMask), nil
}

func (h *Handlers) lookupAgent(ctx context.Context, p *types.SPIFFEID) (*datastore.Agent, error) {
	id, err := idFromProto(p)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "invalid agent ID: %v", err)
	}
	a, err := h.Store.GetAgent(ctx, id.String())
	if errors.Is(err, datastore.ErrNotFound) {
		return nil, status.Errorf(codes.NotFound, "agent %s not found", id)
	}
	if err != nil {
		return nil, status.Errorf(codes.Internal, "could not get agent: %v", err)
	}
	return a, nil
}

// DeleteAgent evicts an agent: it must attest again to get an identity.
func (s *agentServer) DeleteAgent(ctx context.Context, req *agentv1.DeleteAgentRequest) (*emptypb.Empty, error) {
	a, err := s.h.lookupAgent(ctx, req.Id)
	if err != nil {
		return nil, err
	}
	if err := s.h.Store.DeleteAgent(ctx, a.ID); err != nil {
		return nil, status.Errorf(codes.Internal, "could not delete agent: %v", err)
	}
	s.h.audit(ctx, "evict", a.ID, "allow", "agent evicted by an admin", nil)
	s.h.Log.Info("agent evicted", "agent_id", a.ID)
	return &emptypb.Empty{}, nil
}

// BanAgent bans an agent: its SVID stops working and it cannot attest again
// under the same ID until the ban is lifted by deleting the agent.
func (s *agentServer) BanAgent(ctx context.Context, req *agentv1.BanAgentRequest) (*emptypb.Empty, error) {
	a, err := s.h.lookupAgent(ctx, req.Id)
	if err != nil {
		return nil, err
	}
	_, err = s.h.Store.UpdateAgent(ctx, a.ID, func(cur *datastore.Agent) (*datastore.Agent, error) {
		if cur == nil {
			return nil, status.Errorf(codes.NotFound, "agent %s not found", a.ID)
		}
		cur.Banned, cur.SerialNumber, cur.NewSerialNumber = true, "", ""
		return cur, nil
	})
	if _, ok := status.FromError(err); err != nil && ok {
		return nil, err
	}
	if err != nil {
		return nil, status.Errorf(codes.Internal, "could not ban agent: %v", err)
	}
	s.h.audit(ctx, "ban", a.ID, "allow", "agent banned by an admin", nil)
	s.h.Log.Info("agent banned", "agent_id", a.ID)
	return &emptypb.Empty{}, nil
}

// CreateJoinToken creates a single-use join token. With agent_id, as in
// SPIRE, it also registers agent_id as an alias of the agent that will
// redeem the token, so workload entries can name it as their parent.
func (s *agentServer) CreateJoinToken(ctx context.Context, req *agentv1.CreateJoinTokenRequest) (*types.JoinToken, error) {
	h := s.h
	if req.Ttl < 1 {
		return nil, status.Error(codes.InvalidArgument, "ttl is required and must be at least 1 second")
	}
	token := req.Token
	if token == "" {
		token = uuid.NewString()
	}
	if strings.ContainsAny(token, "/ ") {
		return nil, status.Errorf(codes.InvalidArgument, "invalid token %q: it may not contain '/' or spaces", token)
	}
	if len(token) > maxTokenLen {
		return nil, status.Errorf(codes.InvalidArgument, "invalid token: %d characters, at most %d", len(token), maxTokenLen)
	}
	// The token becomes a path segment of the agent's ID: refuse, before
	// storing it, a token the join_token attestor could never redeem.
	tokenAgent, err := spiffeid.FromSegments(h.TrustDomain, "spire", "agent", "join_token", token)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "invalid token %q: %v", token, err)
	}
	var alias spiffeid.ID
	if req.AgentId != nil {
		if alias, err = idFromProto(req.AgentId); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "invalid agent_id: %v", err)
		}
		if alias.TrustDomain() != h.TrustDomain {
			return nil, status.Errorf(codes.InvalidArgument, "invalid agent_id: %q is not a member of trust domain %q", alias, h.TrustDomain)
		}
	}
	expires := h.now().Add(time.Duration(req.Ttl) * time.Second).Unix()
	jt := &datastore.JoinToken{Token: token, ExpiresAt: expires}
	if !alias.IsZero() {
		jt.AgentAlias = alias.String()
	}
	if err := h.Store.CreateJoinToken(ctx, jt); err != nil {
		if errors.Is(err, datastore.ErrAlreadyExists) {
			return nil, status.Error(codes.AlreadyExists, "a join token with that value already exists")
		}
		return nil, status.Errorf(codes.Internal, "could not create join token: %v", err)
	}
	if !alias.IsZero() {
		e := &datastore.Entry{
			SPIFFEID:  alias.String(),
			ParentID:  tokenAgent.String(),
			Selectors: []attestors.Selector{{Type: "spiffe_id", Value: tokenAgent.String()}},
		}
		created, err := h.Store.CreateEntry(ctx, e)
		if err != nil && !errors.Is(err, datastore.ErrAlreadyExists) {
			return nil, status.Errorf(codes.Internal, "could not register agent alias: %v", err)
		}
		h.Entries.Put(created)
	}
	return &types.JoinToken{Value: token, ExpiresAt: expires}, nil
}
