// Package authz decides who may call which server API method.
//
// A caller is one of: local (the admin unix socket, trusted by file
// permissions), an agent (an X509-SVID under /spire/agent/ whose serial is
// the one the server issued last to an agent that is neither banned nor
// evicted), an admin (an X509-SVID whose ID is in admin_ids or belongs to an
// admin entry), or anyone (no client certificate). Every method names the
// roles it admits in one table; a method missing from the table is refused.
package authz

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"github.com/plinth-id/plinth/server/datastore"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Role is a kind of caller a method admits.
type Role uint8

const (
	Anyone Role = 1 << iota
	Local
	Agent
	Admin
)

// Caller is who is calling, as established by Authorizer.
type Caller struct {
	Local bool
	ID    spiffeid.ID      // zero when the caller presented no SVID
	Agent *datastore.Agent // set for an authorized agent
	Admin bool
}

type callerKey struct{}

// CallerFrom returns the caller stored in ctx by the interceptors.
func CallerFrom(ctx context.Context) Caller {
	c, _ := ctx.Value(callerKey{}).(Caller)
	return c
}

// WithCaller returns ctx carrying c (for handlers' tests).
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// Agents is the part of the datastore the authorizer reads.
type Agents interface {
	GetAgent(ctx context.Context, id string) (*datastore.Agent, error)
	UpdateAgent(ctx context.Context, id string, fn func(old *datastore.Agent) (*datastore.Agent, error)) (*datastore.Agent, error)
}

// Authorizer checks callers against the method table.
type Authorizer struct {
	TrustDomain spiffeid.TrustDomain
	Agents      Agents
	// IsAdmin reports whether id may use the admin API over mTLS
	// (admin_ids, or an entry with admin = true).
	IsAdmin func(id spiffeid.ID) bool
	// Methods maps a full gRPC method name to the roles it admits.
	Methods map[string]Role
}

// Unary is the unary server interceptor.
func (a *Authorizer) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	ctx, err := a.authorize(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	return h(ctx, req)
}

// Stream is the stream server interceptor.
func (a *Authorizer) Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	ctx, err := a.authorize(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return h(srv, &stream{ServerStream: ss, ctx: ctx})
}

type stream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *stream) Context() context.Context { return s.ctx }

func (a *Authorizer) authorize(ctx context.Context, method string) (context.Context, error) {
	roles, ok := a.Methods[method]
	if !ok {
		return nil, status.Errorf(codes.PermissionDenied, "method %s is not served", method)
	}
	c, err := a.identify(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unauthenticated, "could not identify caller: %v", err)
	}
	if roles&Anyone != 0 {
		return WithCaller(ctx, c), nil
	}
	if c.Local && roles&(Local|Admin) != 0 {
		c.Admin = true
		return WithCaller(ctx, c), nil
	}
	if !c.ID.IsZero() && roles&Admin != 0 && a.IsAdmin != nil && a.IsAdmin(c.ID) {
		c.Admin = true
		return WithCaller(ctx, c), nil
	}
	if !c.ID.IsZero() && roles&Agent != 0 && isAgentID(c.ID) {
		agent, err := a.checkAgent(ctx, c.ID, ctxLeaf(ctx))
		if err != nil {
			return nil, err
		}
		c.Agent = agent
		return WithCaller(ctx, c), nil
	}
	if c.ID.IsZero() && !c.Local {
		return nil, status.Errorf(codes.PermissionDenied, "%s requires an X509-SVID (or the local admin socket)", method)
	}
	who := c.ID.String()
	if c.Local {
		who = "local caller"
	}
	return nil, status.Errorf(codes.PermissionDenied, "%s is not authorized for %s", who, method)
}

func isAgentID(id spiffeid.ID) bool { return strings.HasPrefix(id.Path(), "/spire/agent/") }

// checkAgent admits an agent that is attested, not banned, and presents the
// SVID the server issued last. A renewed SVID becomes current the first time
// it is used, and from then the previous one is refused.
func (a *Authorizer) checkAgent(ctx context.Context, id spiffeid.ID, leaf *x509.Certificate) (*datastore.Agent, error) {
	agent, err := a.Agents.GetAgent(ctx, id.String())
	if errors.Is(err, datastore.ErrNotFound) {
		return nil, Denied(types.PermissionDeniedDetails_AGENT_NOT_ATTESTED, "agent %s is not attested (evicted or never attested); it must attest again", id)
	}
	if err != nil {
		return nil, status.Errorf(codes.Internal, "could not look up agent: %v", err)
	}
	if agent.Banned {
		return nil, Denied(types.PermissionDeniedDetails_AGENT_BANNED, "agent %s is banned", id)
	}
	serial := leaf.SerialNumber.String()
	switch serial {
	case agent.SerialNumber:
	case agent.NewSerialNumber:
		// Promote the renewed SVID in one transaction with a fresh read, so
		// a ban or eviction that lands meanwhile is not undone.
		promoted, err := a.Agents.UpdateAgent(ctx, agent.ID, func(cur *datastore.Agent) (*datastore.Agent, error) {
			switch {
			case cur == nil:
				return nil, Denied(types.PermissionDeniedDetails_AGENT_NOT_ATTESTED, "agent %s is not attested (evicted or never attested); it must attest again", id)
			case cur.Banned:
				return nil, Denied(types.PermissionDeniedDetails_AGENT_BANNED, "agent %s is banned", id)
			case cur.NewSerialNumber != serial:
				return nil, Denied(types.PermissionDeniedDetails_AGENT_NOT_ACTIVE, "agent %s presented an SVID (serial %s) that is no longer its current one", id, serial)
			}
			cur.SerialNumber, cur.NewSerialNumber = serial, ""
			cur.ExpiresAt = leaf.NotAfter.Unix()
			return cur, nil
		})
		if _, ok := status.FromError(err); err != nil && ok {
			return nil, err
		}
		if err != nil {
			return nil, status.Errorf(codes.Internal, "could not record renewed agent SVID: %v", err)
		}
		agent = promoted
	default:
		return nil, Denied(types.PermissionDeniedDetails_AGENT_NOT_ACTIVE, "agent %s presented an SVID (serial %s) that is no longer its current one", id, serial)
	}
	return agent, nil
}

// Denied returns a PermissionDenied status carrying SPIRE's reason detail,
// which SPIRE agents act on (a banned agent stops; others re-attest).
func Denied(reason types.PermissionDeniedDetails_Reason, format string, args ...any) error {
	st := status.New(codes.PermissionDenied, fmt.Sprintf(format, args...))
	if d, err := st.WithDetails(&types.PermissionDeniedDetails{Reason: reason}); err == nil {
		st = d
	}
	return st.Err()
}

func (a *Authorizer) identify(ctx context.Context) (Caller, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Caller{}, errors.New("no peer")
	}
	if p.Addr != nil && p.Addr.Network() == "unix" {
		return Caller{Local: true}, nil
	}
	leaf := ctxLeaf(ctx)
	if leaf == nil {
		return Caller{}, nil
	}
	// The TLS handshake already verified the chain against the trust bundle
	// (see the server's VerifyPeerCertificate); here only the ID is read.
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return Caller{}, err
	}
	if id.TrustDomain() != a.TrustDomain {
		return Caller{}, fmt.Errorf("SVID %s is not in trust domain %s", id, a.TrustDomain)
	}
	return Caller{ID: id}, nil
}

func ctxLeaf(ctx context.Context) *x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.PeerCertificates) == 0 {
		return nil
	}
	return ti.State.PeerCertificates[0]
}
