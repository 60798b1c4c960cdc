package api

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/plinth-id/plinth/attestors"
	"github.com/plinth-id/plinth/server/authz"
	"github.com/plinth-id/plinth/server/datastore"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

type entryServer struct {
	entryv1.UnimplementedEntryServer
	h *Handlers
}

// selectorMatch implements SPIRE's SelectorMatch behaviours.
type selectorMatch struct {
	want     []attestors.Selector
	behavior types.SelectorMatch_MatchBehavior
}

func newSelectorMatch(m *types.SelectorMatch) (*selectorMatch, error) {
	want, err := selectorsFromProto(m.Selectors)
	if err != nil {
		return nil, err
	}
	if len(want) == 0 {
		return nil, errors.New("at least one selector is required")
	}
	return &selectorMatch{want: want, behavior: m.Match}, nil
}

func (m *selectorMatch) matches(have []attestors.Selector) bool {
	return setMatch(m.want, have, int32(m.behavior))
}

// setMatch compares have against want by SPIRE's behaviours, shared by
// selector and federates-with filters: 0 exact, 1 subset (have ⊆ want),
// 2 superset (have ⊇ want), 3 any (they share one).
func setMatch[T comparable](want, have []T, behavior int32) bool {
	in := func(x T, set []T) bool { return slices.Contains(set, x) }
	subset := func() bool {
		for _, h := range have {
			if !in(h, want) {
				return false
			}
		}
		return true
	}
	switch behavior {
	case 0:
		return len(want) == len(have) && subset()
	case 1:
		return subset()
	case 2:
		for _, w := range want {
			if !in(w, have) {
				return false
			}
		}
		return true
	case 3:
		for _, w := range want {
			if in(w, have) {
				return true
			}
		}
	}
	return false
}

// entryFilter is the filter shared by ListEntries and CountEntries.
type entryFilter interface {
	GetBySpiffeId() *types.SPIFFEID
	GetByParentId() *types.SPIFFEID
	GetBySelectors() *types.SelectorMatch
	GetByFederatesWith() *types.FederatesWithMatch
}

func (h *Handlers) entryKeep(f entryFilter, hint *string, downstream *bool) (func(*datastore.Entry) bool, error) {
	if f == nil {
		return nil, nil
	}
	var id, parent string
	if p := f.GetBySpiffeId(); p != nil {
		v, err := idFromProto(p)
		if err != nil {
			return nil, fmt.Errorf("invalid by_spiffe_id: %v", err)
		}
		id = v.String()
	}
	if p := f.GetByParentId(); p != nil {
		v, err := idFromProto(p)
		if err != nil {
			return nil, fmt.Errorf("invalid by_parent_id: %v", err)
		}
		parent = v.String()
	}
	var sel *selectorMatch
	if m := f.GetBySelectors(); m != nil {
		var err error
		if sel, err = newSelectorMatch(m); err != nil {
			return nil, fmt.Errorf("invalid by_selectors: %v", err)
		}
	}
	fw := f.GetByFederatesWith()
	if fw != nil && len(fw.TrustDomains) == 0 {
		return nil, errors.New("invalid by_federates_with: at least one trust domain is required")
	}
	return func(e *datastore.Entry) bool {
		switch {
		case id != "" && e.SPIFFEID != id:
		case parent != "" && e.ParentID != parent:
		case sel != nil && !sel.matches(e.Selectors):
		case fw != nil && !setMatch(fw.TrustDomains, e.FederatesWith, int32(fw.Match)):
		case hint != nil && e.Hint != *hint:
		case downstream != nil && e.Downstream != *downstream:
		default:
			return true
		}
		return false
	}, nil
}

func (s *entryServer) CountEntries(ctx context.Context, req *entryv1.CountEntriesRequest) (*entryv1.CountEntriesResponse, error) {
	var hint *string
	var downstream *bool
	if f := req.Filter; f != nil {
		if f.ByHint != nil {
			hint = &f.ByHint.Value
		}
		if f.ByDownstream != nil {
			downstream = &f.ByDownstream.Value
		}
	}
	keep, err := s.h.entryKeep(req.Filter, hint, downstream)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if keep == nil {
		return &entryv1.CountEntriesResponse{Count: int32(s.h.Entries.Len())}, nil
	}
	es, _ := s.h.Entries.Page("", 0, keep)
	return &entryv1.CountEntriesResponse{Count: int32(len(es))}, nil
}

func (s *entryServer) ListEntries(ctx context.Context, req *entryv1.ListEntriesRequest) (*entryv1.ListEntriesResponse, error) {
	var hint *string
	var downstream *bool
	if f := req.Filter; f != nil {
		if f.ByHint != nil {
			hint = &f.ByHint.Value
		}
		if f.ByDownstream != nil {
			downstream = &f.ByDownstream.Value
		}
	}
	if req.PageSize < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "invalid page_size %d", req.PageSize)
	}
	keep, err := s.h.entryKeep(req.Filter, hint, downstream)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	es, next := s.h.Entries.Page(req.PageToken, int(req.PageSize), keep)
	resp := &entryv1.ListEntriesResponse{NextPageToken: next}
	for _, e := range es {
		resp.Entries = append(resp.Entries, entryToProto(e, req.OutputMask))
	}
	return resp, nil
}

func (s *entryServer) GetEntry(ctx context.Context, req *entryv1.GetEntryRequest) (*types.Entry, error) {
	if req.Id == "" {
		return nil, status.Error(codes.InvalidArgument, "missing entry ID")
	}
	e := s.h.Entries.Get(req.Id)
	if e == nil {
		return nil, status.Errorf(codes.NotFound, "entry %q not found", req.Id)
	}
	return entryToProto(e, req.OutputMask), nil
}

func statusOf(code codes.Code, msg string) *types.Status {
	return &types.Status{Code: int32(code), Message: msg}
}

var okStatus = statusOf(codes.OK, "OK")

func (s *entryServer) BatchCreateEntry(ctx context.Context, req *entryv1.BatchCreateEntryRequest) (*entryv1.BatchCreateEntryResponse, error) {
	h := s.h
	resp := &entryv1.BatchCreateEntryResponse{Results: make([]*entryv1.BatchCreateEntryResponse_Result, len(req.Entries))}
	var valid []*datastore.Entry
	var at []int
	for i, p := range req.Entries {
		e, err := h.entryFromProto(p)
		if err != nil {
			resp.Results[i] = &entryv1.BatchCreateEntryResponse_Result{Status: statusOf(codes.InvalidArgument, "failed to convert entry: "+err.Error())}
			continue
		}
		valid = append(valid, e)
		at = append(at, i)
	}
	created, errs := h.Store.CreateEntries(ctx, valid)
	for k, i := range at {
		r := &entryv1.BatchCreateEntryResponse_Result{}
		switch err := errs[k]; {
		case err == nil:
			h.Entries.Put(created[k])
			r.Status, r.Entry = okStatus, entryToProto(created[k], req.OutputMask)
		case errors.Is(err, datastore.ErrAlreadyExists):
			r.Status = statusOf(codes.AlreadyExists, "similar entry already exists")
			if created[k] != nil {
				r.Entry = entryToProto(created[k], req.OutputMask)
			}
		default:
			r.Status = statusOf(codes.Internal, "failed to create entry: "+err.Error())
		}
		resp.Results[i] = r
	}
	return resp, nil
}

func (s *entryServer) BatchUpdateEntry(ctx context.Context, req *entryv1.BatchUpdateEntryRequest) (*entryv1.BatchUpdateEntryResponse, error) {
	h := s.h
	resp := &entryv1.BatchUpdateEntryResponse{}
	for _, p := range req.Entries {
		resp.Results = append(resp.Results, h.updateEntry(ctx, p, req.InputMask, req.OutputMask))
	}
	return resp, nil
}

func (h *Handlers) updateEntry(ctx context.Context, p *types.Entry, in, out *types.EntryMask) *entryv1.BatchUpdateEntryResponse_Result {
	fail := func(c codes.Code, msg string) *entryv1.BatchUpdateEntryResponse_Result {
		return &entryv1.BatchUpdateEntryResponse_Result{Status: statusOf(c, msg)}
	}
	if p.GetId() == "" {
		return fail(codes.InvalidArgument, "failed to update entry: missing entry ID")
	}
	old := h.Entries.Get(p.Id)
	if old == nil {
		return fail(codes.NotFound, fmt.Sprintf("entry %q not found", p.Id))
	}
	// Start from the stored entry and overwrite the fields the input mask
	// names (all of them when there is no mask), then validate the result.
	merged := entryToProto(old, nil)
	all := in == nil
	if all || in.SpiffeId {
		merged.SpiffeId = p.SpiffeId
	}
	if all || in.ParentId {
		merged.ParentId = p.ParentId
	}
	if all || in.Selectors {
		merged.Selectors = p.Selectors
	}
	if all || in.X509SvidTtl {
		merged.X509SvidTtl = p.X509SvidTtl
	}
	if all || in.JwtSvidTtl {
		merged.JwtSvidTtl = p.JwtSvidTtl
	}
	if all || in.FederatesWith {
		merged.FederatesWith = p.FederatesWith
	}
	if all || in.Admin {
		merged.Admin = p.Admin
	}
	if all || in.Downstream {
		merged.Downstream = p.Downstream
	}
	if all || in.ExpiresAt {
		merged.ExpiresAt = p.ExpiresAt
	}
	if all || in.DnsNames {
		merged.DnsNames = p.DnsNames
	}
	if all || in.StoreSvid {
		merged.StoreSvid = p.StoreSvid
	}
	if all || in.Hint {
		merged.Hint = p.Hint
	}
	e, err := h.entryFromProto(merged)
	if err != nil {
		return fail(codes.InvalidArgument, "failed to convert entry: "+err.Error())
	}
	e.CreatedAt = old.CreatedAt
	updated, err := h.Store.UpdateEntry(ctx, e)
	switch {
	case errors.Is(err, datastore.ErrNotFound):
		return fail(codes.NotFound, fmt.Sprintf("entry %q not found", p.Id))
	case errors.Is(err, datastore.ErrAlreadyExists):
		return fail(codes.AlreadyExists, "failed to update entry: a similar entry already exists")
	case err != nil:
		return fail(codes.Internal, "failed to update entry: "+err.Error())
	}
	h.Entries.Put(updated)
	return &entryv1.BatchUpdateEntryResponse_Result{Status: okStatus, Entry: entryToProto(updated, out)}
}

func (s *entryServer) BatchDeleteEntry(ctx context.Context, req *entryv1.BatchDeleteEntryRequest) (*entryv1.BatchDeleteEntryResponse, error) {
	h := s.h
	resp := &entryv1.BatchDeleteEntryResponse{}
	for _, id := range req.Ids {
		r := &entryv1.BatchDeleteEntryResponse_Result{Id: id}
		_, err := h.Store.DeleteEntry(ctx, id)
		switch {
		case id == "":
			r.Status = statusOf(codes.InvalidArgument, "missing entry ID")
		case errors.Is(err, datastore.ErrNotFound):
			r.Status = statusOf(codes.NotFound, fmt.Sprintf("entry %q not found", id))
		case err != nil:
			r.Status = statusOf(codes.Internal, "failed to delete entry: "+err.Error())
		default:
			h.Entries.Delete(id)
			r.Status = okStatus
		}
		resp.Results = append(resp.Results, r)
	}
	return resp, nil
}

// authorized returns the unexpired entries the calling agent may receive.
func (h *Handlers) authorized(ctx context.Context) []*datastore.Entry {
	a := authz.CallerFrom(ctx).Agent
	es := h.Entries.Authorized(a.ID, a.Selectors)
	now := h.now().Unix()
	out := es[:0]
	for _, e := range es {
		if e.ExpiresAt == 0 || e.ExpiresAt > now {
			out = append(out, e)
		}
	}
	return out
}

func (s *entryServer) GetAuthorizedEntries(ctx context.Context, req *entryv1.GetAuthorizedEntriesRequest) (*entryv1.GetAuthorizedEntriesResponse, error) {
	resp := &entryv1.GetAuthorizedEntriesResponse{}
	for _, e := range s.h.authorized(ctx) {
		resp.Entries = append(resp.Entries, entryToProto(e, req.OutputMask))
	}
	return resp, nil
}

// syncPageSize is how many entries or revisions one sync response carries.
const syncPageSize = 500

// SyncAuthorizedEntries follows SPIRE's protocol: small sets go down in
// full; large ones as revisions first, then the entries the agent asks for.
func (s *entryServer) SyncAuthorizedEntries(stream entryv1.Entry_SyncAuthorizedEntriesServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	mask := first.OutputMask
	es := s.h.authorized(stream.Context())
	if len(es) < syncPageSize {
		resp := &entryv1.SyncAuthorizedEntriesResponse{}
		for _, e := range es {
			resp.Entries = append(resp.Entries, entryToProto(e, mask))
		}
		return stream.Send(resp)
	}
	byID := make(map[string]*datastore.Entry, len(es))
	for i := 0; i < len(es); i += syncPageSize {
		page := es[i:min(i+syncPageSize, len(es))]
		resp := &entryv1.SyncAuthorizedEntriesResponse{More: i+syncPageSize < len(es)}
		for _, e := range page {
			byID[e.ID] = e
			resp.EntryRevisions = append(resp.EntryRevisions, &entryv1.EntryRevision{Id: e.ID, RevisionNumber: e.RevisionNumber, CreatedAt: e.CreatedAt})
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
	for {
		req, err := stream.Recv()
		if err != nil {
			return nil // the agent closes the stream when it has what it needs
		}
		var found []*datastore.Entry
		for _, id := range req.Ids {
			if e, ok := byID[id]; ok {
				found = append(found, e)
			}
		}
		for i := 0; i == 0 || i < len(found); i += syncPageSize {
			page := found[i:min(i+syncPageSize, len(found))]
			resp := &entryv1.SyncAuthorizedEntriesResponse{More: i+syncPageSize < len(found)}
			for _, e := range page {
				resp.Entries = append(resp.Entries, entryToProto(e, mask))
			}
			if err := stream.Send(resp); err != nil {
				return err
			}
		}
	}
}
