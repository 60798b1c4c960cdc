package api

import (
	"context"
	"time"

	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"regexp"

	"github.com/plinth-id/plinth/adminapi"
	"github.com/plinth-id/plinth/server/datastore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// enrollServer manages the TPM endorsement keys operators trust.
type enrollServer struct{ h *Handlers }

var ekHashPattern = regexp.MustCompile(`^[0-9a-f]{64}$`)

// EKHash is the hex SHA-256 of the PKIX DER of an EK public key, the same
// value tpm/verify computes from a TPM's EK and agents carry in their IDs.
func EKHash(pub any) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

// resolve fills in the EK hash from the key or certificate and checks that
// whatever was given agrees.
func resolve(e adminapi.Enrollment) (*datastore.Enrollment, error) {
	var hashes []string
	if e.EKHash != "" {
		if !ekHashPattern.MatchString(e.EKHash) {
			return nil, fmt.Errorf("EK hash %q is not 64 lowercase hex digits (SHA-256 of the EK public key)", e.EKHash)
		}
		hashes = append(hashes, e.EKHash)
	}
	if len(e.EKPublic) > 0 {
		pub, err := x509.ParsePKIXPublicKey(e.EKPublic)
		if err != nil {
			return nil, fmt.Errorf("EK public key is not a PKIX DER key: %v", err)
		}
		h, err := EKHash(pub)
		if err != nil {
			return nil, err
		}
		hashes = append(hashes, h)
	}
	if len(e.EKCert) > 0 {
		cert, err := x509.ParseCertificate(e.EKCert)
		if err != nil {
			return nil, fmt.Errorf("EK certificate does not parse: %v", err)
		}
		h, err := EKHash(cert.PublicKey)
		if err != nil {
			return nil, err
		}
		hashes = append(hashes, h)
	}
	if len(hashes) == 0 {
		return nil, errors.New("give an EK hash, public key or certificate")
	}
	for _, h := range hashes[1:] {
		if h != hashes[0] {
			return nil, fmt.Errorf("the EK hash, key and certificate given do not describe the same key (%s vs %s)", hashes[0], h)
		}
	}
	return &datastore.Enrollment{EKHash: hashes[0], EKPublic: e.EKPublic, EKCert: e.EKCert, Comment: e.Comment}, nil
}

func (s *enrollServer) Enroll(ctx context.Context, req *adminapi.EnrollRequest) (*adminapi.EnrollResponse, error) {
	if len(req.Enrollments) == 0 {
		return nil, status.Error(codes.InvalidArgument, "nothing to enroll")
	}
	var es []*datastore.Enrollment
	for i, e := range req.Enrollments {
		d, err := resolve(e)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "enrollment %d: %v; nothing was enrolled", i+1, err)
		}
		es = append(es, d)
	}
	if err := s.h.Store.Enroll(ctx, es); err != nil {
		if errors.Is(err, datastore.ErrAlreadyExists) {
			return nil, status.Errorf(codes.AlreadyExists, "%v; nothing was enrolled", err)
		}
		return nil, status.Errorf(codes.Internal, "could not enroll: %v", err)
	}
	resp := &adminapi.EnrollResponse{}
	for _, e := range es {
		s.h.audit(ctx, "tpm_enroll", e.EKHash, "allow", "EK enrolled by an admin", map[string]string{"comment": e.Comment})
		resp.Enrolled = append(resp.Enrolled, adminapi.Enrollment{EKHash: e.EKHash, Comment: e.Comment})
	}
	s.h.Log.Info("TPM endorsement keys enrolled", "count", len(es))
	return resp, nil
}

func (s *enrollServer) Unenroll(ctx context.Context, req *adminapi.UnenrollRequest) error {
	if !ekHashPattern.MatchString(req.EKHash) {
		return status.Errorf(codes.InvalidArgument, "EK hash %q is not 64 lowercase hex digits", req.EKHash)
	}
	if err := s.h.Store.Unenroll(ctx, req.EKHash); err != nil {
		if errors.Is(err, datastore.ErrNotFound) {
			return status.Errorf(codes.NotFound, "EK %s is not enrolled", req.EKHash)
		}
		return status.Errorf(codes.Internal, "could not unenroll: %v", err)
	}
	s.h.audit(ctx, "tpm_unenroll", req.EKHash, "allow", "EK unenrolled by an admin; the node loses its identity at its next re-attestation", nil)
	s.h.Log.Info("TPM endorsement key unenrolled", "ek_hash", req.EKHash)
	return nil
}

func (s *enrollServer) List(ctx context.Context) (*adminapi.ListResponse, error) {
	es, err := s.h.Store.ListEnrollments(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "could not list enrollments: %v", err)
	}
	resp := &adminapi.ListResponse{Enrollments: []adminapi.Enrollment{}}
	for _, e := range es {
		resp.Enrollments = append(resp.Enrollments, adminapi.Enrollment{EKHash: e.EKHash, EKPublic: e.EKPublic, EKCert: e.EKCert, Comment: e.Comment, CreatedAt: e.CreatedAt})
	}
	return resp, nil
}

// agentDetailsServer shows an agent's evidence and the latest decisions.
type agentDetailsServer struct{ h *Handlers }

func (s *agentDetailsServer) Get(ctx context.Context, req *adminapi.AgentDetailsRequest) (*adminapi.AgentDetails, error) {
	id, err := spiffeid.FromString(req.ID)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "invalid agent ID %q: %v", req.ID, err)
	}
	resp := &adminapi.AgentDetails{Decisions: []adminapi.Decision{}}
	a, err := s.h.Store.GetAgent(ctx, id.String())
	switch {
	case err == nil:
		resp.Attested, resp.Evidence = true, a.Evidence
	case !errors.Is(err, datastore.ErrNotFound):
		return nil, status.Errorf(codes.Internal, "could not get agent: %v", err)
	}
	records, err := s.h.Store.ListAudit(ctx, id.String(), 10)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "could not read the audit log: %v", err)
	}
	for _, r := range records {
		resp.Decisions = append(resp.Decisions, adminapi.Decision{Time: time.Unix(r.Time, 0).UTC(), Kind: r.Kind, Decision: r.Decision, Reason: r.Reason, Details: r.Details})
	}
	return resp, nil
}
