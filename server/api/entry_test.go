package api_test

import (
	"fmt"
	"io"
	"slices"
	"testing"

	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func validEntry() *types.Entry {
	return &types.Entry{SpiffeId: id("/w"), ParentId: id("/spire/agent/a"), Selectors: selectors("unix:uid:1000")}
}

func TestBatchCreateEntryValidation(t *testing.T) {
	e := newEnv(t)
	edit := func(f func(*types.Entry)) *types.Entry {
		p := validEntry()
		f(p)
		return p
	}
	for _, c := range []struct {
		name  string
		entry *types.Entry
		code  codes.Code
		msg   string
	}{
		{"valid", validEntry(), codes.OK, "OK"},
		{"missing SPIFFE ID", edit(func(p *types.Entry) { p.SpiffeId = nil }), codes.InvalidArgument,
			"failed to convert entry: invalid spiffe_id: SPIFFE ID is missing"},
		{"invalid SPIFFE ID", edit(func(p *types.Entry) { p.SpiffeId = id("w") }), codes.InvalidArgument,
			`failed to convert entry: invalid spiffe_id: invalid SPIFFE ID "spiffe://example.orgw": path must have a leading slash`},
		{"invalid trust domain", edit(func(p *types.Entry) { p.SpiffeId = &types.SPIFFEID{TrustDomain: "Example.org", Path: "/w"} }), codes.InvalidArgument,
			`failed to convert entry: invalid spiffe_id: invalid SPIFFE ID "spiffe://Example.org/w": trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores`},
		{"another trust domain", edit(func(p *types.Entry) { p.SpiffeId = &types.SPIFFEID{TrustDomain: "other.org", Path: "/w"} }), codes.InvalidArgument,
			`failed to convert entry: invalid spiffe_id: "spiffe://other.org/w" is not a member of trust domain "example.org"`},
		{"trust domain ID", edit(func(p *types.Entry) { p.SpiffeId = id("") }), codes.InvalidArgument,
			`failed to convert entry: invalid spiffe_id: "spiffe://example.org" has no path; entries name workloads, not the trust domain`},
		{"parent in another trust domain", edit(func(p *types.Entry) { p.ParentId = &types.SPIFFEID{TrustDomain: "other.org", Path: "/a"} }), codes.InvalidArgument,
			`failed to convert entry: invalid parent_id: "spiffe://other.org/a" is not a member of trust domain "example.org"`},
		{"no selectors", edit(func(p *types.Entry) { p.Selectors = nil }), codes.InvalidArgument,
			"failed to convert entry: invalid selectors: at least one selector is required"},
		{"selector without value", edit(func(p *types.Entry) { p.Selectors = []*types.Selector{{Type: "unix"}} }), codes.InvalidArgument,
			`failed to convert entry: invalid selectors: invalid selector "unix:": value is empty`},
		{"selector without type", edit(func(p *types.Entry) { p.Selectors = []*types.Selector{{Value: "uid:1"}} }), codes.InvalidArgument,
			`failed to convert entry: invalid selectors: invalid selector ":uid:1": type is empty`},
		{"selector type with a colon", edit(func(p *types.Entry) { p.Selectors = []*types.Selector{{Type: "unix:uid", Value: "1"}} }), codes.InvalidArgument,
			`failed to convert entry: invalid selectors: invalid selector "unix:uid:1": type contains ':'`},
		{"negative X509-SVID TTL", edit(func(p *types.Entry) { p.X509SvidTtl = -1 }), codes.InvalidArgument,
			"failed to convert entry: invalid x509_svid_ttl: -1 is negative"},
		{"negative JWT-SVID TTL", edit(func(p *types.Entry) { p.JwtSvidTtl = -5 }), codes.InvalidArgument,
			"failed to convert entry: invalid jwt_svid_ttl: -5 is negative"},
		{"bad DNS name", edit(func(p *types.Entry) { p.DnsNames = []string{"web.example.org", "-web.example.org"} }), codes.InvalidArgument,
			`failed to convert entry: invalid dns_names: "-web.example.org" is not a valid DNS name`},
		{"empty DNS label", edit(func(p *types.Entry) { p.DnsNames = []string{"web..example.org"} }), codes.InvalidArgument,
			`failed to convert entry: invalid dns_names: "web..example.org" is not a valid DNS name`},
		{"DNS name with an underscore", edit(func(p *types.Entry) { p.DnsNames = []string{"web_1.example.org"} }), codes.InvalidArgument,
			`failed to convert entry: invalid dns_names: "web_1.example.org" is not a valid DNS name`},
		{"bad federated trust domain", edit(func(p *types.Entry) { p.FederatesWith = []string{"Bad TD"} }), codes.InvalidArgument,
			`failed to convert entry: invalid federates_with "Bad TD": trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores`},
		{"negative expiry", edit(func(p *types.Entry) { p.ExpiresAt = -1 }), codes.InvalidArgument,
			"failed to convert entry: invalid expires_at: -1 is negative"},
		{"wildcard DNS name", edit(func(p *types.Entry) {
			p.SpiffeId = id("/web")
			p.DnsNames = []string{"*.example.org"}
		}), codes.OK, "OK"},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, err := entryv1.NewEntryClient(e.admin).BatchCreateEntry(t.Context(), &entryv1.BatchCreateEntryRequest{Entries: []*types.Entry{c.entry}})
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Results) != 1 {
				t.Fatalf("%d results, want 1", len(resp.Results))
			}
			r := resp.Results[0]
			checkResult(t, r.Status, c.code, c.msg)
			if c.code == codes.OK {
				if r.Entry.GetId() == "" || e.h.Entries.Get(r.Entry.Id) == nil {
					t.Error("the created entry is not in the index")
				}
			} else if r.Entry != nil {
				t.Error("an entry was returned for an invalid one")
			}
		})
	}
	if n := e.h.Entries.Len(); n != 2 {
		t.Errorf("the index holds %d entries, want the 2 valid ones", n)
	}
}

func TestBatchCreateEntryAlreadyExists(t *testing.T) {
	e := newEnv(t)
	first := e.createEntries(t, &types.Entry{SpiffeId: id("/w"), ParentId: id("/spire/agent/a"), Selectors: selectors("unix:uid:1", "unix:gid:2")})[0]

	// The same entry with its selectors in another order, a distinct valid
	// entry, and an invalid one, in one batch: each gets its own result, in
	// the request's order.
	resp, err := entryv1.NewEntryClient(e.admin).BatchCreateEntry(t.Context(), &entryv1.BatchCreateEntryRequest{Entries: []*types.Entry{
		{SpiffeId: id("/w"), ParentId: id("/spire/agent/a"), Selectors: selectors("unix:gid:2", "unix:uid:1")},
		{SpiffeId: id("/w"), ParentId: id("/spire/agent/a"), Selectors: selectors("unix:uid:1")},
		{SpiffeId: id("/w"), ParentId: id("/spire/agent/a")},
		{SpiffeId: id("/w"), ParentId: id("/spire/agent/a"), Selectors: selectors("unix:uid:1")},
	}})
	if err != nil {
		t.Fatal(err)
	}
	r := resp.Results
	checkResult(t, r[0].Status, codes.AlreadyExists, "similar entry already exists")
	if r[0].Entry.GetId() != first.Id {
		t.Errorf("ALREADY_EXISTS names entry %q, want the existing %q", r[0].Entry.GetId(), first.Id)
	}
	checkResult(t, r[1].Status, codes.OK, "OK")
	checkResult(t, r[2].Status, codes.InvalidArgument, "failed to convert entry: invalid selectors: at least one selector is required")
	checkResult(t, r[3].Status, codes.AlreadyExists, "similar entry already exists")
	if r[3].Entry.GetId() != r[1].Entry.GetId() {
		t.Errorf("a duplicate of an earlier item names entry %q, want %q", r[3].Entry.GetId(), r[1].Entry.GetId())
	}
	if n := e.h.Entries.Len(); n != 2 {
		t.Errorf("the index holds %d entries, want 2", n)
	}
}

func TestBatchUpdateEntry(t *testing.T) {
	e := newEnv(t)
	created := e.createEntries(t,
		&types.Entry{SpiffeId: id("/w1"), ParentId: id("/spire/agent/a"), Selectors: selectors("unix:uid:1"), Hint: "old", X509SvidTtl: 60},
		&types.Entry{SpiffeId: id("/w2"), ParentId: id("/spire/agent/a"), Selectors: selectors("unix:uid:2")},
	)
	w1, w2 := created[0], created[1]
	client := entryv1.NewEntryClient(e.admin)

	// Only the fields the input mask names change; the output mask trims
	// the result.
	resp, err := client.BatchUpdateEntry(t.Context(), &entryv1.BatchUpdateEntryRequest{
		Entries:    []*types.Entry{{Id: w1.Id, SpiffeId: id("/ignored"), Hint: "new"}},
		InputMask:  &types.EntryMask{Hint: true},
		OutputMask: &types.EntryMask{Hint: true, RevisionNumber: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	checkResult(t, resp.Results[0].Status, codes.OK, "OK")
	if want := (&types.Entry{Id: w1.Id, Hint: "new", RevisionNumber: 1}); !proto.Equal(resp.Results[0].Entry, want) {
		t.Errorf("updated entry = %v, want %v", resp.Results[0].Entry, want)
	}
	got, err := client.GetEntry(t.Context(), &entryv1.GetEntryRequest{Id: w1.Id})
	if err != nil {
		t.Fatal(err)
	}
	want := proto.Clone(w1).(*types.Entry)
	want.Hint, want.RevisionNumber = "new", 1
	if !proto.Equal(got, want) {
		t.Errorf("GetEntry after a masked update = %v, want %v", got, want)
	}

	// Without a mask every field is replaced.
	resp, err = client.BatchUpdateEntry(t.Context(), &entryv1.BatchUpdateEntryRequest{Entries: []*types.Entry{
		{Id: w1.Id, SpiffeId: id("/w1b"), ParentId: id("/spire/agent/b"), Selectors: selectors("unix:uid:3")},
	}})
	if err != nil {
		t.Fatal(err)
	}
	checkResult(t, resp.Results[0].Status, codes.OK, "OK")
	want = &types.Entry{Id: w1.Id, SpiffeId: id("/w1b"), ParentId: id("/spire/agent/b"), Selectors: selectors("unix:uid:3"),
		RevisionNumber: 2, CreatedAt: w1.CreatedAt}
	if !proto.Equal(resp.Results[0].Entry, want) {
		t.Errorf("entry after a full update = %v, want %v", resp.Results[0].Entry, want)
	}
	if ix := e.h.Entries.Get(w1.Id); ix == nil || ix.SPIFFEID != "spiffe://example.org/w1b" || ix.RevisionNumber != 2 {
		t.Errorf("the index holds %+v, want the updated entry", ix)
	}

	// Failures, one per item.
	resp, err = client.BatchUpdateEntry(t.Context(), &entryv1.BatchUpdateEntryRequest{
		Entries: []*types.Entry{
			{Id: "nope", Hint: "x"},
			{Hint: "x"},
			{Id: w2.Id, Selectors: nil},
			{Id: w2.Id, SpiffeId: id("/w1b"), ParentId: id("/spire/agent/b"), Selectors: selectors("unix:uid:3")},
		},
		InputMask: &types.EntryMask{Hint: true, Selectors: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := resp.Results
	checkResult(t, r[0].Status, codes.NotFound, `entry "nope" not found`)
	checkResult(t, r[1].Status, codes.InvalidArgument, "failed to update entry: missing entry ID")
	checkResult(t, r[2].Status, codes.InvalidArgument, "failed to convert entry: invalid selectors: at least one selector is required")
	// With the mask only the selectors change: w2 keeps its SPIFFE ID, so
	// this is no duplicate. Without it, it would be.
	checkResult(t, r[3].Status, codes.OK, "OK")

	resp, err = client.BatchUpdateEntry(t.Context(), &entryv1.BatchUpdateEntryRequest{Entries: []*types.Entry{
		{Id: w2.Id, SpiffeId: id("/w1b"), ParentId: id("/spire/agent/b"), Selectors: selectors("unix:uid:3")},
	}})
	if err != nil {
		t.Fatal(err)
	}
	checkResult(t, resp.Results[0].Status, codes.AlreadyExists, "failed to update entry: a similar entry already exists")
}

func TestBatchDeleteEntry(t *testing.T) {
	e := newEnv(t)
	w := e.createEntries(t, validEntry())[0]
	client := entryv1.NewEntryClient(e.admin)
	resp, err := client.BatchDeleteEntry(t.Context(), &entryv1.BatchDeleteEntryRequest{Ids: []string{w.Id, "nope", "", w.Id}})
	if err != nil {
		t.Fatal(err)
	}
	r := resp.Results
	if len(r) != 4 || r[0].Id != w.Id || r[1].Id != "nope" {
		t.Fatalf("results = %v, want one per ID, in order", r)
	}
	checkResult(t, r[0].Status, codes.OK, "OK")
	checkResult(t, r[1].Status, codes.NotFound, `entry "nope" not found`)
	checkResult(t, r[2].Status, codes.InvalidArgument, "missing entry ID")
	checkResult(t, r[3].Status, codes.NotFound, `entry "`+w.Id+`" not found`)

	_, err = client.GetEntry(t.Context(), &entryv1.GetEntryRequest{Id: w.Id})
	checkStatus(t, err, codes.NotFound, `entry "`+w.Id+`" not found`, 0)
	if e.h.Entries.Len() != 0 {
		t.Error("the deleted entry is still in the index")
	}
}

func TestGetEntry(t *testing.T) {
	e := newEnv(t)
	w := e.createEntries(t, validEntry())[0]
	client := entryv1.NewEntryClient(e.admin)
	got, err := client.GetEntry(t.Context(), &entryv1.GetEntryRequest{Id: w.Id, OutputMask: &types.EntryMask{SpiffeId: true}})
	if err != nil {
		t.Fatal(err)
	}
	if want := (&types.Entry{Id: w.Id, SpiffeId: id("/w")}); !proto.Equal(got, want) {
		t.Errorf("GetEntry = %v, want %v", got, want)
	}
	_, err = client.GetEntry(t.Context(), &entryv1.GetEntryRequest{})
	checkStatus(t, err, codes.InvalidArgument, "missing entry ID", 0)
}

func TestListEntries(t *testing.T) {
	e := newEnv(t)
	e.createEntries(t,
		&types.Entry{SpiffeId: id("/e1"), ParentId: id("/spire/agent/a"), Selectors: selectors("unix:uid:1"), Hint: "h1"},
		&types.Entry{SpiffeId: id("/e2"), ParentId: id("/spire/agent/a"), Selectors: selectors("unix:uid:1", "unix:gid:1")},
		&types.Entry{SpiffeId: id("/e3"), ParentId: id("/spire/agent/b"), Selectors: selectors("unix:uid:2")},
		&types.Entry{SpiffeId: id("/e4"), ParentId: id("/spire/agent/b"), Selectors: selectors("unix:gid:1"), Hint: "h1", Downstream: true},
	)
	match := func(b types.SelectorMatch_MatchBehavior, ss ...string) *types.SelectorMatch {
		return &types.SelectorMatch{Selectors: selectors(ss...), Match: b}
	}
	client := entryv1.NewEntryClient(e.admin)
	for _, c := range []struct {
		name   string
		filter *entryv1.ListEntriesRequest_Filter
		want   []string
	}{
		{"no filter", nil, []string{"/e1", "/e2", "/e3", "/e4"}},
		{"by SPIFFE ID", &entryv1.ListEntriesRequest_Filter{BySpiffeId: id("/e3")}, []string{"/e3"}},
		{"by parent", &entryv1.ListEntriesRequest_Filter{ByParentId: id("/spire/agent/a")}, []string{"/e1", "/e2"}},
		{"selectors exact", &entryv1.ListEntriesRequest_Filter{BySelectors: match(types.SelectorMatch_MATCH_EXACT, "unix:uid:1")}, []string{"/e1"}},
		{"selectors exact, any order", &entryv1.ListEntriesRequest_Filter{BySelectors: match(types.SelectorMatch_MATCH_EXACT, "unix:uid:1", "unix:gid:1")}, []string{"/e2"}},
		{"selectors subset", &entryv1.ListEntriesRequest_Filter{BySelectors: match(types.SelectorMatch_MATCH_SUBSET, "unix:uid:1", "unix:gid:1")}, []string{"/e1", "/e2", "/e4"}},
		{"selectors superset", &entryv1.ListEntriesRequest_Filter{BySelectors: match(types.SelectorMatch_MATCH_SUPERSET, "unix:uid:1")}, []string{"/e1", "/e2"}},
		{"selectors any", &entryv1.ListEntriesRequest_Filter{BySelectors: match(types.SelectorMatch_MATCH_ANY, "unix:uid:2", "unix:gid:1")}, []string{"/e2", "/e3", "/e4"}},
		{"by hint", &entryv1.ListEntriesRequest_Filter{ByHint: wrapperspb.String("h1")}, []string{"/e1", "/e4"}},
		{"by empty hint", &entryv1.ListEntriesRequest_Filter{ByHint: wrapperspb.String("")}, []string{"/e2", "/e3"}},
		{"by downstream", &entryv1.ListEntriesRequest_Filter{ByDownstream: wrapperspb.Bool(true)}, []string{"/e4"}},
		{"parent and selectors", &entryv1.ListEntriesRequest_Filter{ByParentId: id("/spire/agent/b"), BySelectors: match(types.SelectorMatch_MATCH_ANY, "unix:gid:1")}, []string{"/e4"}},
		{"nothing matches", &entryv1.ListEntriesRequest_Filter{ByParentId: id("/spire/agent/c")}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, err := client.ListEntries(t.Context(), &entryv1.ListEntriesRequest{Filter: c.filter})
			if err != nil {
				t.Fatal(err)
			}
			if got := paths(resp.Entries); !slices.Equal(got, c.want) || resp.NextPageToken != "" {
				t.Errorf("ListEntries = %v, next %q; want %v and no next page", got, resp.NextPageToken, c.want)
			}

			countFilter := &entryv1.CountEntriesRequest_Filter{}
			if c.filter != nil {
				countFilter = &entryv1.CountEntriesRequest_Filter{BySpiffeId: c.filter.BySpiffeId, ByParentId: c.filter.ByParentId,
					BySelectors: c.filter.BySelectors, ByHint: c.filter.ByHint, ByDownstream: c.filter.ByDownstream}
			}
			count, err := client.CountEntries(t.Context(), &entryv1.CountEntriesRequest{Filter: countFilter})
			if err != nil {
				t.Fatal(err)
			}
			if count.Count != int32(len(c.want)) {
				t.Errorf("CountEntries = %d, want %d", count.Count, len(c.want))
			}
		})
	}

	for _, c := range []struct {
		name string
		req  *entryv1.ListEntriesRequest
		msg  string
	}{
		{"negative page size", &entryv1.ListEntriesRequest{PageSize: -1}, "invalid page_size -1"},
		{"selector filter without selectors", &entryv1.ListEntriesRequest{Filter: &entryv1.ListEntriesRequest_Filter{BySelectors: &types.SelectorMatch{}}},
			"invalid by_selectors: at least one selector is required"},
		{"invalid parent filter", &entryv1.ListEntriesRequest{Filter: &entryv1.ListEntriesRequest_Filter{ByParentId: id("a")}},
			`invalid by_parent_id: invalid SPIFFE ID "spiffe://example.orga": path must have a leading slash`},
		{"federates-with filter without trust domains", &entryv1.ListEntriesRequest{Filter: &entryv1.ListEntriesRequest_Filter{ByFederatesWith: &types.FederatesWithMatch{}}},
			"invalid by_federates_with: at least one trust domain is required"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := client.ListEntries(t.Context(), c.req)
			checkStatus(t, err, codes.InvalidArgument, c.msg, 0)
		})
	}

	count, err := client.CountEntries(t.Context(), &entryv1.CountEntriesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if count.Count != 4 {
		t.Errorf("CountEntries without a filter = %d, want 4", count.Count)
	}
}

func TestListEntriesPages(t *testing.T) {
	e := newEnv(t)
	var all []*types.Entry
	for i := range 7 {
		all = append(all, &types.Entry{SpiffeId: id("/w" + string(rune('a'+i))), ParentId: id("/spire/agent/a"), Selectors: selectors("unix:uid:1")})
	}
	all[2].Selectors = selectors("unix:uid:2")
	all[5].Selectors = selectors("unix:uid:2")
	e.createEntries(t, all...)
	client := entryv1.NewEntryClient(e.admin)

	for _, c := range []struct {
		name      string
		pageSize  int32
		filter    *entryv1.ListEntriesRequest_Filter
		wantPages int
		want      []string
	}{
		{"pages of 3", 3, nil, 3, []string{"/wa", "/wb", "/wc", "/wd", "/we", "/wf", "/wg"}},
		{"pages of 1", 1, nil, 7, []string{"/wa", "/wb", "/wc", "/wd", "/we", "/wf", "/wg"}},
		{"one page", 7, nil, 1, []string{"/wa", "/wb", "/wc", "/wd", "/we", "/wf", "/wg"}},
		{"filtered pages of 2", 2, &entryv1.ListEntriesRequest_Filter{BySelectors: &types.SelectorMatch{Selectors: selectors("unix:uid:1")}}, 3,
			[]string{"/wa", "/wb", "/wd", "/we", "/wg"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var got []*types.Entry
			token, pages := "", 0
			for {
				resp, err := client.ListEntries(t.Context(), &entryv1.ListEntriesRequest{PageSize: c.pageSize, PageToken: token, Filter: c.filter})
				if err != nil {
					t.Fatal(err)
				}
				pages++
				if len(resp.Entries) > int(c.pageSize) {
					t.Fatalf("page %d has %d entries, more than the page size %d", pages, len(resp.Entries), c.pageSize)
				}
				got = append(got, resp.Entries...)
				if token = resp.NextPageToken; token == "" {
					break
				}
				if pages > 10 {
					t.Fatal("pagination does not end")
				}
			}
			if p := paths(got); !slices.Equal(p, c.want) || pages != c.wantPages {
				t.Errorf("%d pages with %v, want %d pages with %v", pages, p, c.wantPages, c.want)
			}
		})
	}
}

// paths returns the SPIFFE ID paths of es, sorted (entry IDs are random, so
// list order is not path order).
func paths(es []*types.Entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.SpiffeId.Path)
	}
	slices.Sort(out)
	if len(out) == 0 {
		return nil
	}
	return out
}

func TestSyncAuthorizedEntries(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	conn := e.as(t, e.agent(t, "a"))
	var many []*types.Entry
	for i := range 501 {
		many = append(many, &types.Entry{SpiffeId: id(fmt.Sprintf("/w%03d", i)), ParentId: id("/spire/agent/join_token/a"), Selectors: selectors("unix:uid:1")})
	}
	sync := func() entryv1.Entry_SyncAuthorizedEntriesClient {
		t.Helper()
		stream, err := entryv1.NewEntryClient(conn).SyncAuthorizedEntries(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&entryv1.SyncAuthorizedEntriesRequest{OutputMask: &types.EntryMask{SpiffeId: true}}); err != nil {
			t.Fatal(err)
		}
		return stream
	}

	// A small set comes down in full, in one response.
	e.createEntries(t, many[:2]...)
	stream := sync()
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if got := paths(resp.Entries); !slices.Equal(got, []string{"/w000", "/w001"}) || resp.More || len(resp.EntryRevisions) != 0 {
		t.Errorf("small sync = %v (more %v, %d revisions), want both entries in one response", got, resp.More, len(resp.EntryRevisions))
	}
	if resp.Entries[0].ParentId != nil {
		t.Error("the output mask was not applied")
	}
	if _, err := stream.Recv(); err != io.EOF {
		t.Errorf("after the small sync: %v, want EOF", err)
	}

	// A large set comes down as revisions, then the entries asked for.
	e.createEntries(t, many[2:]...)
	stream = sync()
	var revisions []*entryv1.EntryRevision
	for {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Entries) != 0 {
			t.Fatal("entries came before they were asked for")
		}
		revisions = append(revisions, resp.EntryRevisions...)
		if !resp.More {
			break
		}
	}
	if len(revisions) != 501 {
		t.Fatalf("%d revisions, want 501", len(revisions))
	}
	want := []string{revisions[7].Id, revisions[500].Id, "unknown"}
	if err := stream.Send(&entryv1.SyncAuthorizedEntriesRequest{Ids: want}); err != nil {
		t.Fatal(err)
	}
	resp, err = stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, en := range resp.Entries {
		got = append(got, en.Id)
	}
	if !slices.Equal(got, want[:2]) || resp.More {
		t.Errorf("asked-for entries = %v (more %v), want %v", got, resp.More, want[:2])
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != io.EOF {
		t.Errorf("after CloseSend: %v, want EOF", err)
	}
}
