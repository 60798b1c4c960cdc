// Package adminapi holds Plinth's admin services beside SPIRE's API, on the
// admin socket, for what SPIRE's API cannot express: the TPM enrollment list
// and the CA's key provenance. A SPIRE tool that knows nothing of them still
// works.
//
// The services are described by hand (no generated code): each method takes
// and returns a google.protobuf.BytesValue holding a JSON message, version 1.
package adminapi

import (
	"context"
	"encoding/json"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// method adapts a typed method to gRPC: JSON in a BytesValue each way,
// through the server's interceptors.
func method[S, Req any](name, full string, f func(context.Context, S, *Req) (any, error)) grpc.MethodDesc {
	return grpc.MethodDesc{MethodName: name, Handler: func(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
		in := new(wrapperspb.BytesValue)
		if err := dec(in); err != nil {
			return nil, err
		}
		call := func(ctx context.Context, _ any) (any, error) {
			req := new(Req)
			if len(in.Value) > 0 {
				if err := json.Unmarshal(in.Value, req); err != nil {
					return nil, fmt.Errorf("adminapi: malformed request: %w", err)
				}
			}
			out, err := f(ctx, srv.(S), req)
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
		return icpt(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: full}, call)
	}}
}

// Client calls the admin services.
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
