package api

import (
	"context"

	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

type bundleServer struct {
	bundlev1.UnimplementedBundleServer
	h *Handlers
}

// GetBundle returns the trust domain's bundle: every X.509 authority and JWT
// key that may have signed a live SVID, prepared ones included.
func (s *bundleServer) GetBundle(ctx context.Context, req *bundlev1.GetBundleRequest) (*types.Bundle, error) {
	b, err := bundleToProto(s.h.CA.Bundle(), req.OutputMask)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "could not encode bundle: %v", err)
	}
	return b, nil
}

// CountBundles counts the trust domain's own bundle and federated bundles
// (federation comes later: there are none yet).
func (s *bundleServer) CountBundles(ctx context.Context, req *bundlev1.CountBundlesRequest) (*bundlev1.CountBundlesResponse, error) {
	return &bundlev1.CountBundlesResponse{Count: 1}, nil
}

func (s *bundleServer) ListFederatedBundles(ctx context.Context, req *bundlev1.ListFederatedBundlesRequest) (*bundlev1.ListFederatedBundlesResponse, error) {
	return &bundlev1.ListFederatedBundlesResponse{}, nil
}

func (s *bundleServer) GetFederatedBundle(ctx context.Context, req *bundlev1.GetFederatedBundleRequest) (*types.Bundle, error) {
	return nil, status.Errorf(codes.NotFound, "no federated bundle for trust domain %q", req.TrustDomain)
}
