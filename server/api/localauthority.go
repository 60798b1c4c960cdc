package api

import (
	"context"
	"errors"
	"fmt"

	"github.com/plinth-id/plinth/adminapi"
	"github.com/plinth-id/plinth/server/ca"
	localauthorityv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/localauthority/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// localAuthorityServer is SPIRE's LocalAuthority API: forced rotation of
// the CA's X.509 and JWT authorities.
type localAuthorityServer struct {
	localauthorityv1.UnimplementedLocalAuthorityServer
	h *Handlers
}

func authorityState(s ca.AuthorityState) *localauthorityv1.AuthorityState {
	return &localauthorityv1.AuthorityState{AuthorityId: s.ID, ExpiresAt: s.NotAfter.Unix()}
}

// states splits a kind's authorities by status: SPIRE shows one of each,
// the newest.
func (h *Handlers) states(ctx context.Context, kind ca.Kind) (active, prepared, old *localauthorityv1.AuthorityState) {
	for _, s := range h.CA.Authorities(ctx, kind) {
		switch {
		case s.Status == ca.Active && active == nil:
			active = authorityState(s)
		case s.Status == ca.Prepared && prepared == nil:
			prepared = authorityState(s)
		case s.Status == ca.Old && old == nil:
			old = authorityState(s)
		}
	}
	return active, prepared, old
}

// change runs one forced-rotation step and audits it.
func (h *Handlers) change(ctx context.Context, what string, kind ca.Kind, id string, f func() (ca.AuthorityState, error)) (*localauthorityv1.AuthorityState, error) {
	s, err := f()
	if errors.Is(err, ca.ErrPrecondition) {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	if err != nil {
		return nil, status.Errorf(codes.Internal, "could not %s the %s authority: %v", what, kind, err)
	}
	details := map[string]string{"requested_id": id, "status": string(s.Status), "key_id": s.KeyID}
	if p := s.Provenance; p != nil {
		details["key_backend"], details["key_location"] = p.Backend, p.Location
		details["key_generated_inside"] = fmt.Sprint(p.GeneratedInside)
		details["key_non_extractable"] = fmt.Sprint(p.NonExtractable)
		for k, v := range p.Attributes {
			details["key_"+k] = v
		}
	}
	h.audit(ctx, "authority_"+what, string(kind)+":"+s.ID, "allow", "by an admin", details)
	return authorityState(s), nil
}

func (s *localAuthorityServer) GetX509AuthorityState(ctx context.Context, _ *localauthorityv1.GetX509AuthorityStateRequest) (*localauthorityv1.GetX509AuthorityStateResponse, error) {
	a, p, o := s.h.states(ctx, ca.X509)
	return &localauthorityv1.GetX509AuthorityStateResponse{Active: a, Prepared: p, Old: o}, nil
}

func (s *localAuthorityServer) PrepareX509Authority(ctx context.Context, _ *localauthorityv1.PrepareX509AuthorityRequest) (*localauthorityv1.PrepareX509AuthorityResponse, error) {
	st, err := s.h.change(ctx, "prepare", ca.X509, "", func() (ca.AuthorityState, error) { return s.h.CA.Prepare(ctx, ca.X509) })
	return &localauthorityv1.PrepareX509AuthorityResponse{PreparedAuthority: st}, err
}

func (s *localAuthorityServer) ActivateX509Authority(ctx context.Context, req *localauthorityv1.ActivateX509AuthorityRequest) (*localauthorityv1.ActivateX509AuthorityResponse, error) {
	if req.AuthorityId == "" {
		return nil, status.Error(codes.InvalidArgument, "no authority ID given")
	}
	st, err := s.h.change(ctx, "activate", ca.X509, req.AuthorityId, func() (ca.AuthorityState, error) { return s.h.CA.Activate(ctx, ca.X509, req.AuthorityId) })
	return &localauthorityv1.ActivateX509AuthorityResponse{ActivatedAuthority: st}, err
}

func (s *localAuthorityServer) TaintX509Authority(ctx context.Context, req *localauthorityv1.TaintX509AuthorityRequest) (*localauthorityv1.TaintX509AuthorityResponse, error) {
	if req.AuthorityId == "" {
		return nil, status.Error(codes.InvalidArgument, "no authority ID given")
	}
	st, err := s.h.change(ctx, "taint", ca.X509, req.AuthorityId, func() (ca.AuthorityState, error) { return s.h.CA.Taint(ctx, ca.X509, req.AuthorityId) })
	return &localauthorityv1.TaintX509AuthorityResponse{TaintedAuthority: st}, err
}

func (s *localAuthorityServer) RevokeX509Authority(ctx context.Context, req *localauthorityv1.RevokeX509AuthorityRequest) (*localauthorityv1.RevokeX509AuthorityResponse, error) {
	if req.AuthorityId == "" {
		return nil, status.Error(codes.InvalidArgument, "no authority ID given")
	}
	st, err := s.h.change(ctx, "revoke", ca.X509, req.AuthorityId, func() (ca.AuthorityState, error) { return s.h.CA.Revoke(ctx, ca.X509, req.AuthorityId) })
	return &localauthorityv1.RevokeX509AuthorityResponse{RevokedAuthority: st}, err
}

func (s *localAuthorityServer) GetJWTAuthorityState(ctx context.Context, _ *localauthorityv1.GetJWTAuthorityStateRequest) (*localauthorityv1.GetJWTAuthorityStateResponse, error) {
	a, p, o := s.h.states(ctx, ca.JWT)
	return &localauthorityv1.GetJWTAuthorityStateResponse{Active: a, Prepared: p, Old: o}, nil
}

func (s *localAuthorityServer) PrepareJWTAuthority(ctx context.Context, _ *localauthorityv1.PrepareJWTAuthorityRequest) (*localauthorityv1.PrepareJWTAuthorityResponse, error) {
	st, err := s.h.change(ctx, "prepare", ca.JWT, "", func() (ca.AuthorityState, error) { return s.h.CA.Prepare(ctx, ca.JWT) })
	return &localauthorityv1.PrepareJWTAuthorityResponse{PreparedAuthority: st}, err
}

func (s *localAuthorityServer) ActivateJWTAuthority(ctx context.Context, req *localauthorityv1.ActivateJWTAuthorityRequest) (*localauthorityv1.ActivateJWTAuthorityResponse, error) {
	if req.AuthorityId == "" {
		return nil, status.Error(codes.InvalidArgument, "no authority ID given")
	}
	st, err := s.h.change(ctx, "activate", ca.JWT, req.AuthorityId, func() (ca.AuthorityState, error) { return s.h.CA.Activate(ctx, ca.JWT, req.AuthorityId) })
	return &localauthorityv1.ActivateJWTAuthorityResponse{ActivatedAuthority: st}, err
}

func (s *localAuthorityServer) TaintJWTAuthority(ctx context.Context, req *localauthorityv1.TaintJWTAuthorityRequest) (*localauthorityv1.TaintJWTAuthorityResponse, error) {
	if req.AuthorityId == "" {
		return nil, status.Error(codes.InvalidArgument, "no authority ID given")
	}
	st, err := s.h.change(ctx, "taint", ca.JWT, req.AuthorityId, func() (ca.AuthorityState, error) { return s.h.CA.Taint(ctx, ca.JWT, req.AuthorityId) })
	return &localauthorityv1.TaintJWTAuthorityResponse{TaintedAuthority: st}, err
}

func (s *localAuthorityServer) RevokeJWTAuthority(ctx context.Context, req *localauthorityv1.RevokeJWTAuthorityRequest) (*localauthorityv1.RevokeJWTAuthorityResponse, error) {
	if req.AuthorityId == "" {
		return nil, status.Error(codes.InvalidArgument, "no authority ID given")
	}
	st, err := s.h.change(ctx, "revoke", ca.JWT, req.AuthorityId, func() (ca.AuthorityState, error) { return s.h.CA.Revoke(ctx, ca.JWT, req.AuthorityId) })
	return &localauthorityv1.RevokeJWTAuthorityResponse{RevokedAuthority: st}, err
}

// authorityServer is Plinth's authority listing with key provenance.
type authorityServer struct{ h *Handlers }

func (s *authorityServer) List(ctx context.Context, req *adminapi.AuthorityListRequest) (*adminapi.AuthorityListResponse, error) {
	kind := ca.Kind(req.Kind)
	if kind != ca.X509 && kind != ca.JWT {
		return nil, status.Errorf(codes.InvalidArgument, "unknown authority kind %q (want x509 or jwt)", req.Kind)
	}
	resp := &adminapi.AuthorityListResponse{Authorities: []adminapi.Authority{}}
	for _, a := range s.h.CA.Authorities(ctx, kind) {
		out := adminapi.Authority{Kind: string(kind), ID: a.ID, Status: string(a.Status), Slot: a.Slot, KeyID: a.KeyID, NotBefore: a.NotBefore, NotAfter: a.NotAfter, Tainted: a.Tainted}
		if p := a.Provenance; p != nil {
			out.Backend, out.Location, out.GeneratedInside, out.NonExtractable, out.Attributes = p.Backend, p.Location, p.GeneratedInside, p.NonExtractable, p.Attributes
		}
		resp.Authorities = append(resp.Authorities, out)
	}
	return resp, nil
}
