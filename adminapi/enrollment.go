package adminapi

import (
	"context"

	"google.golang.org/grpc"
)

// EnrollmentService is the TPM enrollment service: the operator's list of
// trusted endorsement keys (`plinth-server tpm enroll|unenroll|list`).
const EnrollmentService = "plinth.server.tpm.v1.Enrollment"

// Its methods, as used in authorization tables.
const (
	EnrollMethod         = "/" + EnrollmentService + "/Enroll"
	UnenrollMethod       = "/" + EnrollmentService + "/Unenroll"
	EnrollmentListMethod = "/" + EnrollmentService + "/List"
)

// Enrollment is one trusted EK. The client may send only EKPublic or
// EKCert: the server computes EKHash (hex SHA-256 of the PKIX DER).
type Enrollment struct {
	EKHash    string `json:"ek_hash,omitempty"`
	EKPublic  []byte `json:"ek_public,omitempty"` // PKIX DER
	EKCert    []byte `json:"ek_cert,omitempty"`   // DER
	Comment   string `json:"comment,omitempty"`
	CreatedAt int64  `json:"created_at,omitempty"`
}

// EnrollRequest enrolls every EK in one transaction: all or none.
type EnrollRequest struct {
	Enrollments []Enrollment `json:"enrollments"`
}

// EnrollResponse says what was enrolled, with hashes filled in.
type EnrollResponse struct {
	Enrolled []Enrollment `json:"enrolled"`
}

// UnenrollRequest removes one EK.
type UnenrollRequest struct {
	EKHash string `json:"ek_hash"`
}

// ListResponse holds every enrollment.
type ListResponse struct {
	Enrollments []Enrollment `json:"enrollments"`
}

// EnrollmentServer is implemented by the server's handler.
type EnrollmentServer interface {
	Enroll(context.Context, *EnrollRequest) (*EnrollResponse, error)
	Unenroll(context.Context, *UnenrollRequest) error
	List(context.Context) (*ListResponse, error)
}

// EnrollmentServiceDesc registers an EnrollmentServer on a grpc.Server.
var EnrollmentServiceDesc = grpc.ServiceDesc{
	ServiceName: EnrollmentService,
	HandlerType: (*EnrollmentServer)(nil),
	Methods: []grpc.MethodDesc{
		method("Enroll", EnrollMethod, func(ctx context.Context, s EnrollmentServer, req *EnrollRequest) (any, error) {
			return s.Enroll(ctx, req)
		}),
		method("Unenroll", UnenrollMethod, func(ctx context.Context, s EnrollmentServer, req *UnenrollRequest) (any, error) {
			return struct{}{}, s.Unenroll(ctx, req)
		}),
		method("List", EnrollmentListMethod, func(ctx context.Context, s EnrollmentServer, _ *struct{}) (any, error) { return s.List(ctx) }),
	},
	Metadata: "plinth/server/tpm/v1/enrollment.proto",
}

// Enroll enrolls EKs, all or none.
func (c *Client) Enroll(ctx context.Context, req *EnrollRequest) (*EnrollResponse, error) {
	resp := new(EnrollResponse)
	return resp, c.call(ctx, EnrollMethod, req, resp)
}

// Unenroll removes an EK.
func (c *Client) Unenroll(ctx context.Context, ekHash string) error {
	return c.call(ctx, UnenrollMethod, &UnenrollRequest{EKHash: ekHash}, nil)
}

// List returns every enrollment.
func (c *Client) List(ctx context.Context) (*ListResponse, error) {
	resp := new(ListResponse)
	return resp, c.call(ctx, EnrollmentListMethod, struct{}{}, resp)
}
