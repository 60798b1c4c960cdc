package api

import (
	"context"
	"fmt"
	"time"

	"github.com/plinth-id/plinth/server/ca"
	"github.com/plinth-id/plinth/server/datastore"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

type svidServer struct {
	svidv1.UnimplementedSVIDServer
	h *Handlers
}

// MintX509SVID signs an X509-SVID for the one SPIFFE ID in the CSR's URI
// SAN (admin only).
func (s *svidServer) MintX509SVID(ctx context.Context, req *svidv1.MintX509SVIDRequest) (*svidv1.MintX509SVIDResponse, error) {
	if req.Ttl < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "invalid ttl %d", req.Ttl)
	}
	csr, err := parseCSR(req.Csr)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if len(csr.URIs) != 1 {
		return nil, status.Errorf(codes.InvalidArgument, "CSR must have exactly one URI SAN (the SPIFFE ID), has %d", len(csr.URIs))
	}
	id, err := spiffeid.FromURI(csr.URIs[0])
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "CSR URI SAN is not a SPIFFE ID: %v", err)
	}
	if id.TrustDomain() != s.h.TrustDomain {
		return nil, status.Errorf(codes.InvalidArgument, "%q is not a member of trust domain %q", id, s.h.TrustDomain)
	}
	for _, d := range csr.DNSNames {
		if err := validateDNSName(d); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "CSR DNS SAN: %v", err)
		}
	}
	chain, err := s.h.CA.SignX509SVID(ctx, ca.X509Params{ID: id, PublicKey: csr.PublicKey, DNSNames: csr.DNSNames, TTL: time.Duration(req.Ttl) * time.Second})
	if err != nil {
		return nil, status.Errorf(codes.Internal, "could not sign X509-SVID: %v", err)
	}
	return &svidv1.MintX509SVIDResponse{Svid: x509SVIDToProto(chain, id, "")}, nil
}

// MintJWTSVID signs a JWT-SVID for any ID in the trust domain (admin only).
func (s *svidServer) MintJWTSVID(ctx context.Context, req *svidv1.MintJWTSVIDRequest) (*svidv1.MintJWTSVIDResponse, error) {
	id, err := idFromProto(req.Id)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "invalid SPIFFE ID: %v", err)
	}
	if id.TrustDomain() != s.h.TrustDomain {
		return nil, status.Errorf(codes.InvalidArgument, "%q is not a member of trust domain %q", id, s.h.TrustDomain)
	}
	if req.Ttl < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "invalid ttl %d", req.Ttl)
	}
	svid, err := s.h.signJWT(ctx, id, req.Audience, time.Duration(req.Ttl)*time.Second, "")
	if err != nil {
		return nil, err
	}
	return &svidv1.MintJWTSVIDResponse{Svid: svid}, nil
}

func (h *Handlers) signJWT(ctx context.Context, id spiffeid.ID, audience []string, ttl time.Duration, hint string) (*types.JWTSVID, error) {
	if len(audience) == 0 {
		return nil, status.Error(codes.InvalidArgument, "at least one audience is required")
	}
	for _, a := range audience {
		if a == "" {
			return nil, status.Error(codes.InvalidArgument, "audience may not be empty")
		}
	}
	token, iat, exp, err := h.CA.SignJWTSVID(ctx, id, audience, ttl)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "could not sign JWT-SVID: %v", err)
	}
	return &types.JWTSVID{Token: token, Id: idToProto(id.String()), ExpiresAt: exp.Unix(), IssuedAt: iat.Unix(), Hint: hint}, nil
}

// BatchNewX509SVID signs an X509-SVID per entry the calling agent is
// authorized for; results keep the request's order.
func (s *svidServer) BatchNewX509SVID(ctx context.Context, req *svidv1.BatchNewX509SVIDRequest) (*svidv1.BatchNewX509SVIDResponse, error) {
	h := s.h
	auth := h.authorizedByID(ctx)
	resp := &svidv1.BatchNewX509SVIDResponse{Results: make([]*svidv1.BatchNewX509SVIDResponse_Result, len(req.Params))}
	for i, p := range req.Params {
		resp.Results[i] = h.newX509SVID(ctx, auth, p)
	}
	return resp, nil
}

func (h *Handlers) authorizedByID(ctx context.Context) map[string]*datastore.Entry {
	es := h.authorized(ctx)
	m := make(map[string]*datastore.Entry, len(es))
	for _, e := range es {
		m[e.ID] = e
	}
	return m
}

func (h *Handlers) newX509SVID(ctx context.Context, auth map[string]*datastore.Entry, p *svidv1.NewX509SVIDParams) *svidv1.BatchNewX509SVIDResponse_Result {
	fail := func(c codes.Code, format string, args ...any) *svidv1.BatchNewX509SVIDResponse_Result {
		return &svidv1.BatchNewX509SVIDResponse_Result{Status: statusOf(c, fmt.Sprintf(format, args...))}
	}
	e, ok := auth[p.GetEntryId()]
	if !ok {
		return fail(codes.NotFound, "entry %q not found or not authorized for this agent", p.GetEntryId())
	}
	csr, err := parseCSR(p.Csr)
	if err != nil {
		return fail(codes.InvalidArgument, "%v", err)
	}
	id, err := spiffeid.FromString(e.SPIFFEID)
	if err != nil {
		return fail(codes.Internal, "entry %q has an invalid SPIFFE ID: %v", e.ID, err)
	}
	chain, err := h.CA.SignX509SVID(ctx, ca.X509Params{ID: id, PublicKey: csr.PublicKey, DNSNames: e.DNSNames, TTL: time.Duration(e.X509SVIDTTL) * time.Second})
	if err != nil {
		return fail(codes.Internal, "could not sign X509-SVID: %v", err)
	}
	return &svidv1.BatchNewX509SVIDResponse_Result{Status: okStatus, Svid: x509SVIDToProto(chain, id, e.Hint)}
}

// NewJWTSVID signs a JWT-SVID for an entry the calling agent is authorized for.
func (s *svidServer) NewJWTSVID(ctx context.Context, req *svidv1.NewJWTSVIDRequest) (*svidv1.NewJWTSVIDResponse, error) {
	e, ok := s.h.authorizedByID(ctx)[req.EntryId]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "entry %q not found or not authorized for this agent", req.EntryId)
	}
	id, err := spiffeid.FromString(e.SPIFFEID)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "entry %q has an invalid SPIFFE ID: %v", e.ID, err)
	}
	svid, err := s.h.signJWT(ctx, id, req.Audience, time.Duration(e.JWTSVIDTTL)*time.Second, e.Hint)
	if err != nil {
		return nil, err
	}
	return &svidv1.NewJWTSVIDResponse{Svid: svid}, nil
}
