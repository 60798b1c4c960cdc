package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"time"

	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// entryFlags are the flags that describe an entry (create and update).
type entryFlags struct {
	entryID, spiffeID, parentID, hint  string
	selectors, dns, federatesWith      stringList
	x509TTL, jwtTTL                    int
	entryExpiry                        int64
	admin, downstream, node, storeSVID bool
}

func (f *entryFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.entryID, "entryID", "", "The registration entry ID")
	fs.StringVar(&f.spiffeID, "spiffeID", "", "The SPIFFE ID that this record represents")
	fs.StringVar(&f.parentID, "parentID", "", "The SPIFFE ID of this record's parent")
	fs.Var(&f.selectors, "selector", "A colon-delimited type:value selector. Can be used more than once")
	fs.Var(&f.dns, "dns", "A DNS name that will be included in SVIDs issued based on this entry. Can be used more than once")
	fs.Var(&f.federatesWith, "federatesWith", "SPIFFE ID of a trust domain to federate with. Can be used more than once")
	fs.IntVar(&f.x509TTL, "x509SVIDTTL", 0, "The lifetime, in seconds, for x509-SVIDs issued based on this registration entry")
	fs.IntVar(&f.jwtTTL, "jwtSVIDTTL", 0, "The lifetime, in seconds, for JWT-SVIDs issued based on this registration entry")
	fs.Int64Var(&f.entryExpiry, "entryExpiry", 0, "An expiry, from epoch in seconds, for the resulting registration entry to be pruned")
	fs.StringVar(&f.hint, "hint", "", "The entry hint, used to disambiguate entries with the same SPIFFE ID")
	fs.BoolVar(&f.admin, "admin", false, "If set, the SPIFFE ID in this entry will be granted access to the server's admin API")
	fs.BoolVar(&f.downstream, "downstream", false, "A boolean value that, when set, indicates that the entry describes a downstream SPIRE server")
	fs.BoolVar(&f.node, "node", false, "If set, this entry will be applied to matching nodes rather than workloads")
	fs.BoolVar(&f.storeSVID, "storeSVID", false, "A boolean value that, when set, indicates that the resulting issued SVID from this entry must be stored through an SVIDStore plugin")
}

// entry validates the flags and builds the entry, reporting every missing or
// malformed flag at once.
func (f *entryFlags) entry(needID bool) (*types.Entry, error) {
	var errs []error
	if needID && f.entryID == "" {
		errs = append(errs, errors.New("-entryID is required"))
	}
	if f.spiffeID == "" {
		errs = append(errs, errors.New("-spiffeID is required"))
	}
	if f.parentID == "" && !f.node {
		errs = append(errs, errors.New("-parentID or -node is required"))
	}
	if f.parentID != "" && f.node {
		errs = append(errs, errors.New("-parentID and -node cannot be used together"))
	}
	if len(f.selectors) == 0 {
		errs = append(errs, errors.New("at least one -selector is required"))
	}
	if f.x509TTL < 0 || f.jwtTTL < 0 {
		errs = append(errs, errors.New("TTLs may not be negative"))
	}
	e := &types.Entry{
		Id: f.entryID, DnsNames: f.dns, FederatesWith: f.federatesWith, Hint: f.hint,
		X509SvidTtl: int32(f.x509TTL), JwtSvidTtl: int32(f.jwtTTL), ExpiresAt: f.entryExpiry,
		Admin: f.admin, Downstream: f.downstream, StoreSvid: f.storeSVID,
	}
	var err error
	if f.spiffeID != "" {
		if e.SpiffeId, err = parseID("spiffeID", f.spiffeID); err != nil {
			errs = append(errs, err)
		}
	}
	if f.node && e.SpiffeId != nil {
		e.ParentId = &types.SPIFFEID{TrustDomain: e.SpiffeId.TrustDomain, Path: "/spire/server"}
	} else if f.parentID != "" {
		if e.ParentId, err = parseID("parentID", f.parentID); err != nil {
			errs = append(errs, err)
		}
	}
	if e.Selectors, err = parseSelectors(f.selectors); err != nil {
		errs = append(errs, err)
	}
	return e, errors.Join(errs...)
}

func entryCreate(ctx context.Context, args []string) error {
	return entryWrite(ctx, "entry create", args)
}

func entryUpdate(ctx context.Context, args []string) error {
	return entryWrite(ctx, "entry update", args)
}

// entryWrite creates or updates one entry from the flags.
func entryWrite(ctx context.Context, name string, args []string) error {
	c := newAdminCmd(name)
	var f entryFlags
	f.register(c.fs)
	if err := c.parse(args); err != nil {
		return err
	}
	update := name == "entry update"
	e, err := f.entry(update)
	if err != nil {
		return err
	}
	return call(ctx, c, func(ctx context.Context, conn *grpc.ClientConn) (proto.Message, error) {
		client := entryv1.NewEntryClient(conn)
		if update {
			return client.BatchUpdateEntry(ctx, &entryv1.BatchUpdateEntryRequest{Entries: []*types.Entry{e}})
		}
		return client.BatchCreateEntry(ctx, &entryv1.BatchCreateEntryRequest{Entries: []*types.Entry{e}})
	}, func(resp proto.Message) error {
		var st *types.Status
		var out *types.Entry
		switch r := resp.(type) {
		case *entryv1.BatchCreateEntryResponse:
			st, out = r.Results[0].Status, r.Results[0].Entry
		case *entryv1.BatchUpdateEntryResponse:
			st, out = r.Results[0].Status, r.Results[0].Entry
		}
		if st.Code != int32(codes.OK) {
			if update {
				return fmt.Errorf("failed to update entry %s (code: %s, msg: %q)", e.Id, codes.Code(st.Code), st.Message)
			}
			return fmt.Errorf("failed to create the following entry (code: %s, msg: %q): %s", codes.Code(st.Code), st.Message, idString(e.SpiffeId))
		}
		printEntry(out)
		return nil
	})
}

func entryDelete(ctx context.Context, args []string) error {
	c := newAdminCmd("entry delete")
	id := c.fs.String("entryID", "", "The Registration Entry ID of the record to delete")
	if err := c.parse(args); err != nil {
		return err
	}
	if *id == "" {
		return errors.New("-entryID is required")
	}
	conn, err := c.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	resp, err := entryv1.NewEntryClient(conn).BatchDeleteEntry(ctx, &entryv1.BatchDeleteEntryRequest{Ids: []string{*id}})
	if err != nil {
		return rpcErr(err)
	}
	if c.output == "json" {
		return printJSON(resp)
	}
	r := resp.Results[0]
	if r.Status.Code != int32(codes.OK) {
		return fmt.Errorf("failed to delete entry %s (code: %s, msg: %q)", *id, codes.Code(r.Status.Code), r.Status.Message)
	}
	fmt.Printf("Deleted entry with ID: %s\n", *id)
	return nil
}

// showFilter holds the filters of entry show and entry count.
type showFilter struct {
	entryID, spiffeID, parentID, match, hint string
	selectors, federatesWith                 stringList
}

func (f *showFilter) register(fs *flag.FlagSet) {
	fs.StringVar(&f.spiffeID, "spiffeID", "", "The SPIFFE ID of the records to show")
	fs.StringVar(&f.parentID, "parentID", "", "The Parent ID of the records to show")
	fs.Var(&f.selectors, "selector", "A colon-delimited type:value selector. Can be used more than once")
	fs.Var(&f.federatesWith, "federatesWith", "SPIFFE ID of a trust domain an entry is federate with. Can be used more than once")
	fs.StringVar(&f.match, "matchSelectorsOn", "superset", "The match mode used when filtering by selectors. Options: exact, any, superset and subset")
	fs.StringVar(&f.hint, "hint", "", "The Hint of the records to show (optional)")
}

func (f *showFilter) filter() (*entryv1.ListEntriesRequest_Filter, error) {
	out := &entryv1.ListEntriesRequest_Filter{}
	var err error
	if f.spiffeID != "" {
		if out.BySpiffeId, err = parseID("spiffeID", f.spiffeID); err != nil {
			return nil, err
		}
	}
	if f.parentID != "" {
		if out.ByParentId, err = parseID("parentID", f.parentID); err != nil {
			return nil, err
		}
	}
	match, ok := map[string]types.SelectorMatch_MatchBehavior{
		"exact": types.SelectorMatch_MATCH_EXACT, "subset": types.SelectorMatch_MATCH_SUBSET,
		"superset": types.SelectorMatch_MATCH_SUPERSET, "any": types.SelectorMatch_MATCH_ANY,
	}[f.match]
	if !ok {
		return nil, fmt.Errorf("invalid -matchSelectorsOn %q: want exact, any, superset or subset", f.match)
	}
	if len(f.selectors) > 0 {
		sels, err := parseSelectors(f.selectors)
		if err != nil {
			return nil, err
		}
		out.BySelectors = &types.SelectorMatch{Selectors: sels, Match: match}
	}
	if len(f.federatesWith) > 0 {
		out.ByFederatesWith = &types.FederatesWithMatch{TrustDomains: f.federatesWith, Match: types.FederatesWithMatch_MatchBehavior(match)}
	}
	if f.hint != "" {
		out.ByHint = wrapperspb.String(f.hint)
	}
	return out, nil
}

func entryShow(ctx context.Context, args []string) error {
	c := newAdminCmd("entry show")
	var f showFilter
	c.fs.StringVar(&f.entryID, "entryID", "", "The Entry ID of the records to show")
	f.register(c.fs)
	if err := c.parse(args); err != nil {
		return err
	}
	filter, err := f.filter()
	if err != nil {
		return err
	}
	conn, err := c.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	client := entryv1.NewEntryClient(conn)
	resp := &entryv1.ListEntriesResponse{}
	if f.entryID != "" {
		e, err := client.GetEntry(ctx, &entryv1.GetEntryRequest{Id: f.entryID})
		if err != nil {
			return rpcErr(err)
		}
		resp.Entries = []*types.Entry{e}
	} else {
		req := &entryv1.ListEntriesRequest{Filter: filter, PageSize: 1000}
		for {
			page, err := client.ListEntries(ctx, req)
			if err != nil {
				return rpcErr(err)
			}
			resp.Entries = append(resp.Entries, page.Entries...)
			if page.NextPageToken == "" {
				break
			}
			req.PageToken = page.NextPageToken
		}
	}
	if c.output == "json" {
		return printJSON(resp)
	}
	fmt.Printf("Found %d %s\n", len(resp.Entries), plural(len(resp.Entries), "entry", "entries"))
	for _, e := range resp.Entries {
		printEntry(e)
	}
	return nil
}

func entryCount(ctx context.Context, args []string) error {
	c := newAdminCmd("entry count")
	var f showFilter
	f.register(c.fs)
	if err := c.parse(args); err != nil {
		return err
	}
	lf, err := f.filter()
	if err != nil {
		return err
	}
	conn, err := c.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	resp, err := entryv1.NewEntryClient(conn).CountEntries(ctx, &entryv1.CountEntriesRequest{Filter: &entryv1.CountEntriesRequest_Filter{
		BySpiffeId: lf.BySpiffeId, ByParentId: lf.ByParentId, BySelectors: lf.BySelectors, ByFederatesWith: lf.ByFederatesWith, ByHint: lf.ByHint,
	}})
	if err != nil {
		return rpcErr(err)
	}
	if c.output == "json" {
		return printJSON(resp)
	}
	fmt.Printf("%d registration %s\n", resp.Count, plural(int(resp.Count), "entry", "entries"))
	return nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func printEntry(e *types.Entry) {
	fmt.Println()
	row := func(k, v string) { fmt.Printf("%-17s: %s\n", k, v) }
	ttl := func(s int32) string {
		if s == 0 {
			return "default"
		}
		return (time.Duration(s) * time.Second).String()
	}
	row("Entry ID", e.Id)
	row("SPIFFE ID", idString(e.SpiffeId))
	row("Parent ID", idString(e.ParentId))
	row("Revision", fmt.Sprint(e.RevisionNumber))
	if e.Downstream {
		row("Downstream", "true")
	}
	if e.ExpiresAt != 0 {
		row("Expiration time", time.Unix(e.ExpiresAt, 0).UTC().String())
	} else {
		row("Expiration time", "never")
	}
	row("X509-SVID TTL", ttl(e.X509SvidTtl))
	row("JWT-SVID TTL", ttl(e.JwtSvidTtl))
	for _, s := range e.Selectors {
		row("Selector", s.Type+":"+s.Value)
	}
	for _, fw := range e.FederatesWith {
		row("FederatesWith", fw)
	}
	for _, d := range e.DnsNames {
		row("DNS name", d)
	}
	if e.Admin {
		row("Admin", "true")
	}
	if e.StoreSvid {
		row("StoreSvid", "true")
	}
	if e.Hint != "" {
		row("Hint", e.Hint)
	}
	if e.CreatedAt != 0 {
		row("Created at", time.Unix(e.CreatedAt, 0).UTC().Format(time.RFC3339))
	}
}
