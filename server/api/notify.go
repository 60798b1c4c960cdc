package api

import (
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

type notifyServer struct{ h *Handlers }

// Watch sends a message now and after every change to the entries or the
// bundle. Changes that happen while a message is in flight collapse into
// the next one, so a burst of writes costs an agent one sync, not one each.
func (s *notifyServer) Watch(_ *emptypb.Empty, stream grpc.ServerStreamingServer[wrapperspb.UInt64Value]) error {
	ctx := stream.Context()
	var n uint64
	for {
		entries, bundle := s.h.Entries.Changed(), s.h.CA.Changed()
		if err := stream.Send(wrapperspb.UInt64(n)); err != nil {
			return err
		}
		n++
		select {
		case <-ctx.Done():
			return nil
		case <-entries:
		case <-bundle:
		}
	}
}
