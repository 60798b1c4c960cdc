// Package notify is Plinth's change-notification service, version 1: the
// one thing SPIRE's server API cannot carry. An agent opens Watch once; the
// server sends a message at once and then whenever the registration entries
// or the trust bundle change, so the agent syncs immediately instead of
// waiting for its next poll. Messages carry only a counter, never data: the
// agent still fetches through SPIRE's API, and a SPIRE agent that knows
// nothing of this service works unchanged.
//
// The service is described by hand (no generated code): request
// google.protobuf.Empty, response stream of google.protobuf.UInt64Value.
package notify

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// WatchMethod is the full method name.
const WatchMethod = "/plinth.server.notify.v1.Notify/Watch"

// Server is implemented by the server's handler.
type Server interface {
	Watch(*emptypb.Empty, grpc.ServerStreamingServer[wrapperspb.UInt64Value]) error
}

// ServiceDesc registers a Server on a grpc.Server.
var ServiceDesc = grpc.ServiceDesc{
	ServiceName: "plinth.server.notify.v1.Notify",
	HandlerType: (*Server)(nil),
	Streams: []grpc.StreamDesc{{
		StreamName:    "Watch",
		ServerStreams: true,
		Handler: func(srv any, stream grpc.ServerStream) error {
			in := new(emptypb.Empty)
			if err := stream.RecvMsg(in); err != nil {
				return err
			}
			return srv.(Server).Watch(in, &grpc.GenericServerStream[emptypb.Empty, wrapperspb.UInt64Value]{ServerStream: stream})
		},
	}},
	Metadata: "plinth/server/notify/v1/notify.proto",
}

// Watch opens the stream on conn. Each Recv returns when something changed.
func Watch(ctx context.Context, conn grpc.ClientConnInterface) (grpc.ServerStreamingClient[wrapperspb.UInt64Value], error) {
	stream, err := conn.NewStream(ctx, &ServiceDesc.Streams[0], WatchMethod)
	if err != nil {
		return nil, err
	}
	x := &grpc.GenericClientStream[emptypb.Empty, wrapperspb.UInt64Value]{ClientStream: stream}
	if err := x.ClientStream.SendMsg(&emptypb.Empty{}); err != nil {
		return nil, err
	}
	if err := x.ClientStream.CloseSend(); err != nil {
		return nil, err
	}
	return x, nil
}
