package agent

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"time"

	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
)

// client implements cache.Client over the current connection to the server,
// which renewal swaps.
type client struct {
	conn atomic.Pointer[grpc.ClientConn]
}

// callTimeout bounds one call so a hung server cannot stall syncing.
const callTimeout = 30 * time.Second

func (c *client) Bundle(ctx context.Context) (*types.Bundle, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	return bundlev1.NewBundleClient(c.conn.Load()).GetBundle(ctx, &bundlev1.GetBundleRequest{})
}

// Entries follows SPIRE's SyncAuthorizedEntries protocol: a small set comes
// in full; a large one as revisions, then the agent asks for every entry
// (the cache decides what changed by revision).
func (c *client) Entries(ctx context.Context) ([]*types.Entry, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	stream, err := entryv1.NewEntryClient(c.conn.Load()).SyncAuthorizedEntries(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&entryv1.SyncAuthorizedEntriesRequest{}); err != nil {
		return nil, err
	}
	var entries []*types.Entry
	var ids []string
	for {
		resp, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		entries = append(entries, resp.Entries...)
		for _, r := range resp.EntryRevisions {
			ids = append(ids, r.Id)
		}
		if !resp.More {
			break
		}
	}
	if len(ids) > 0 {
		if err := stream.Send(&entryv1.SyncAuthorizedEntriesRequest{Ids: ids}); err != nil {
			return nil, err
		}
		for {
			resp, err := stream.Recv()
			if err != nil {
				return nil, err
			}
			entries = append(entries, resp.Entries...)
			if !resp.More {
				break
			}
		}
	}
	if err := stream.CloseSend(); err != nil {
		return nil, err
	}
	if _, err := stream.Recv(); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return entries, nil
}

func (c *client) NewX509SVIDs(ctx context.Context, params []*svidv1.NewX509SVIDParams) ([]*svidv1.BatchNewX509SVIDResponse_Result, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := svidv1.NewSVIDClient(c.conn.Load()).BatchNewX509SVID(ctx, &svidv1.BatchNewX509SVIDRequest{Params: params})
	if err != nil {
		return nil, err
	}
	return resp.Results, nil
}

func (c *client) NewJWTSVID(ctx context.Context, entryID string, audience []string) (*types.JWTSVID, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := svidv1.NewSVIDClient(c.conn.Load()).NewJWTSVID(ctx, &svidv1.NewJWTSVIDRequest{EntryId: entryID, Audience: audience})
	if err != nil {
		return nil, err
	}
	return resp.Svid, nil
}
