// Package enroll is Plinth's TPM enrollment admin service, version 1: the
// operator's list of trusted endorsement keys, managed with
// `plinth-server tpm enroll|unenroll|list`. SPIRE's API has no such
// service; this one sits beside it on the admin socket.
//
// The service is described by hand (no generated code): each method takes
// and returns a google.protobuf.BytesValue holding the JSON messages below.
package enroll

import (
	"context"
	"encoding/json"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Service is the full service name.
const Service = "plinth.server.tpm.v1.Enrollment"

// Method names, as used in authorization tables.
const (
	EnrollMethod   = "/" + Service + "/Enroll"
	UnenrollMethod = "/" + Service + "/Unenroll"
	ListMethod     = "/" + Service + "/List"
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

// Server is implemented by the server's handler.
type Server interface {
	Enroll(context.Context, *EnrollRequest) (*EnrollResponse, error)
	Unenroll(context.Context, *UnenrollRequest) error
	List(context.Context) (*ListResponse, error)
}

// ServiceDesc registers a Server on a grpc.Server.
var ServiceDesc = grpc.ServiceDesc{
	ServiceName: Service,
	HandlerType: (*Server)(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: "Enroll", Handler: handler(EnrollMethod, func(ctx context.Context, s Server, req *EnrollRequest) (any, error) { return s.Enroll(ctx, req) })},
		{MethodName: "Unenroll", Handler: handler(UnenrollMethod, func(ctx context.Context, s Server, req *UnenrollRequest) (any, error) {
			return struct{}{}, s.Unenroll(ctx, req)
		})},
		{MethodName: "List", Handler: handler(ListMethod, func(ctx context.Context, s Server, _ *struct{}) (any, error) { return s.List(ctx) })},
	},
	Metadata: "plinth/server/tpm/v1/enrollment.proto",
}

// handler adapts a typed method to gRPC: JSON in a BytesValue each way,
// through the server's interceptors.
func handler[Req any](method string, f func(context.Context, Server, *Req) (any, error)) func(any, context.Context, func(any) error, grpc.UnaryServerInterceptor) (any, error) {
	return func(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
		in := new(wrapperspb.BytesValue)
		if err := dec(in); err != nil {
			return nil, err
		}
		call := func(ctx context.Context, _ any) (any, error) {
			req := new(Req)
			if len(in.Value) > 0 {
				if err := json.Unmarshal(in.Value, req); err != nil {
					return nil, fmt.Errorf("enroll: malformed request: %w", err)
				}
			}
			out, err := f(ctx, srv.(Server), req)
			if err != nil {
				return nil, err
			}
			b, err := json.Marshal(out)
			if err != nil {
				return nil, err
			}
			return wrapperspb.Bytes(b), nil
		}
		if icpt == nil {
			return call(ctx, in)
		}
		return icpt(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: method}, call)
	}
}

// Client calls the service.
type Client struct{ conn grpc.ClientConnInterface }

// NewClient returns a client over conn (the admin socket).
func NewClient(conn grpc.ClientConnInterface) *Client { return &Client{conn: conn} }

func (c *Client) call(ctx context.Context, method string, req, resp any) error {
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	out := new(wrapperspb.BytesValue)
	if err := c.conn.Invoke(ctx, method, wrapperspb.Bytes(b), out); err != nil {
		return err
	}
	if resp == nil {
		return nil
	}
	return json.Unmarshal(out.Value, resp)
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
	return resp, c.call(ctx, ListMethod, struct{}{}, resp)
}
