package api_test

import (
	"crypto"
	"slices"
	"testing"
	"time"

	"github.com/plinth-id/plinth/notify"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
)

func (e *env) jwtBundle() *jwtbundle.Bundle {
	keys := map[string]crypto.PublicKey{}
	for _, a := range e.ca.Bundle().JWTAuthorities {
		keys[a.KeyID] = a.PublicKey
	}
	return jwtbundle.FromJWTAuthorities(td, keys)
}

func TestBatchNewX509SVID(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	a, b := e.agent(t, "a"), e.agent(t, "b")
	es := e.createEntries(t,
		&types.Entry{SpiffeId: id("/wa"), ParentId: id("/spire/agent/join_token/a"), Selectors: selectors("unix:uid:1"),
			DnsNames: []string{"wa.example.org"}, X509SvidTtl: 600, Hint: "internal"},
		&types.Entry{SpiffeId: id("/wb"), ParentId: id("/spire/agent/join_token/b"), Selectors: selectors("unix:uid:1")},
		&types.Entry{SpiffeId: id("/expired"), ParentId: id("/spire/agent/join_token/a"), Selectors: selectors("unix:uid:1"),
			ExpiresAt: e.clock.now().Unix()},
	)
	wa, wb, expired := es[0], es[1], es[2]
	key := newKey(t)

	resp, err := svidv1.NewSVIDClient(e.as(t, a)).BatchNewX509SVID(ctx, &svidv1.BatchNewX509SVIDRequest{Params: []*svidv1.NewX509SVIDParams{
		{EntryId: wa.Id, Csr: csr(t, key, nil)},
		{EntryId: wb.Id, Csr: csr(t, key, nil)},
		{EntryId: "nope", Csr: csr(t, key, nil)},
		{EntryId: expired.Id, Csr: csr(t, key, nil)},
		{EntryId: wa.Id, Csr: badCSR(t)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	r := resp.Results
	if len(r) != 5 {
		t.Fatalf("%d results, want 5", len(r))
	}
	checkResult(t, r[0].Status, codes.OK, "OK")
	checkResult(t, r[1].Status, codes.NotFound, `entry "`+wb.Id+`" not found or not authorized for this agent`)
	checkResult(t, r[2].Status, codes.NotFound, `entry "nope" not found or not authorized for this agent`)
	checkResult(t, r[3].Status, codes.NotFound, `entry "`+expired.Id+`" not found or not authorized for this agent`)
	checkResult(t, r[4].Status, codes.InvalidArgument, "invalid CSR signature: x509: ECDSA verification failure")

	svid := svidFrom(t, r[0].Svid, key)
	leaf := svid.Certificates[0]
	if got, _, err := x509svid.Verify(svid.Certificates, e.x509Bundle()); err != nil || got.String() != "spiffe://example.org/wa" {
		t.Errorf("X509-SVID verifies as %v, %v; want spiffe://example.org/wa", got, err)
	}
	if !slices.Equal(leaf.DNSNames, []string{"wa.example.org"}) || !leaf.NotAfter.Equal(e.clock.now().Add(10*time.Minute)) || r[0].Svid.Hint != "internal" {
		t.Errorf("X509-SVID: DNS %v, NotAfter %v, hint %q; want the entry's DNS name, TTL (10m) and hint", leaf.DNSNames, leaf.NotAfter, r[0].Svid.Hint)
	}

	// Agent b gets its own entry.
	resp, err = svidv1.NewSVIDClient(e.as(t, b)).BatchNewX509SVID(ctx, &svidv1.BatchNewX509SVIDRequest{Params: []*svidv1.NewX509SVIDParams{
		{EntryId: wb.Id, Csr: csr(t, key, nil)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	checkResult(t, resp.Results[0].Status, codes.OK, "OK")

	// Only agents may call it.
	_, err = svidv1.NewSVIDClient(e.admin).BatchNewX509SVID(ctx, &svidv1.BatchNewX509SVIDRequest{})
	checkStatus(t, err, codes.PermissionDenied, "local caller is not authorized for /spire.api.server.svid.v1.SVID/BatchNewX509SVID", 0)
}

func TestNewJWTSVID(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	a := e.agent(t, "a")
	es := e.createEntries(t,
		&types.Entry{SpiffeId: id("/wa"), ParentId: id("/spire/agent/join_token/a"), Selectors: selectors("unix:uid:1"), JwtSvidTtl: 120, Hint: "h"},
		&types.Entry{SpiffeId: id("/wb"), ParentId: id("/spire/agent/join_token/b"), Selectors: selectors("unix:uid:1")},
	)
	client := svidv1.NewSVIDClient(e.as(t, a))

	resp, err := client.NewJWTSVID(ctx, &svidv1.NewJWTSVIDRequest{EntryId: es[0].Id, Audience: []string{"db"}})
	if err != nil {
		t.Fatal(err)
	}
	svid, err := jwtsvid.ParseAndValidate(resp.Svid.Token, e.jwtBundle(), []string{"db"})
	if err != nil {
		t.Fatalf("go-spiffe rejects the JWT-SVID: %v", err)
	}
	now := e.clock.now()
	if svid.ID.String() != "spiffe://example.org/wa" || !svid.Expiry.Equal(now.Add(2*time.Minute)) ||
		resp.Svid.ExpiresAt != now.Add(2*time.Minute).Unix() || resp.Svid.IssuedAt != now.Unix() || resp.Svid.Hint != "h" {
		t.Errorf("JWT-SVID for %v expiring %v (reported %d, issued %d, hint %q); want spiffe://example.org/wa, the entry's TTL (2m) and hint",
			svid.ID, svid.Expiry, resp.Svid.ExpiresAt, resp.Svid.IssuedAt, resp.Svid.Hint)
	}

	for _, c := range []struct {
		name string
		req  *svidv1.NewJWTSVIDRequest
		code codes.Code
		msg  string
	}{
		{"another agent's entry", &svidv1.NewJWTSVIDRequest{EntryId: es[1].Id, Audience: []string{"db"}}, codes.NotFound,
			`entry "` + es[1].Id + `" not found or not authorized for this agent`},
		{"no audience", &svidv1.NewJWTSVIDRequest{EntryId: es[0].Id}, codes.InvalidArgument, "at least one audience is required"},
		{"empty audience", &svidv1.NewJWTSVIDRequest{EntryId: es[0].Id, Audience: []string{"db", ""}}, codes.InvalidArgument, "audience may not be empty"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := client.NewJWTSVID(ctx, c.req)
			checkStatus(t, err, c.code, c.msg, 0)
		})
	}
}

func TestMintX509SVID(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	client := svidv1.NewSVIDClient(e.admin)
	key := newKey(t)

	resp, err := client.MintX509SVID(ctx, &svidv1.MintX509SVIDRequest{Csr: csr(t, key, []string{"spiffe://example.org/minted"}, "m.example.org"), Ttl: 300})
	if err != nil {
		t.Fatal(err)
	}
	svid := svidFrom(t, resp.Svid, key)
	if got, _, err := x509svid.Verify(svid.Certificates, e.x509Bundle()); err != nil || got.String() != "spiffe://example.org/minted" {
		t.Errorf("minted SVID verifies as %v, %v", got, err)
	}
	if leaf := svid.Certificates[0]; !slices.Equal(leaf.DNSNames, []string{"m.example.org"}) || !leaf.NotAfter.Equal(e.clock.now().Add(5*time.Minute)) {
		t.Errorf("minted SVID: DNS %v, NotAfter %v", leaf.DNSNames, leaf.NotAfter)
	}

	for _, c := range []struct {
		name string
		req  *svidv1.MintX509SVIDRequest
		msg  string
	}{
		{"no URI SAN", &svidv1.MintX509SVIDRequest{Csr: csr(t, key, nil)}, "CSR must have exactly one URI SAN (the SPIFFE ID), has 0"},
		{"two URI SANs", &svidv1.MintX509SVIDRequest{Csr: csr(t, key, []string{"spiffe://example.org/a", "spiffe://example.org/b"})},
			"CSR must have exactly one URI SAN (the SPIFFE ID), has 2"},
		{"not a SPIFFE ID", &svidv1.MintX509SVIDRequest{Csr: csr(t, key, []string{"https://example.org/a"})},
			"CSR URI SAN is not a SPIFFE ID: scheme is missing or invalid"},
		{"another trust domain", &svidv1.MintX509SVIDRequest{Csr: csr(t, key, []string{"spiffe://other.org/a"})},
			`"spiffe://other.org/a" is not a member of trust domain "example.org"`},
		{"bad DNS SAN", &svidv1.MintX509SVIDRequest{Csr: csr(t, key, []string{"spiffe://example.org/a"}, "-bad.example.org")},
			`CSR DNS SAN: "-bad.example.org" is not a valid DNS name`},
		{"negative TTL", &svidv1.MintX509SVIDRequest{Csr: csr(t, key, []string{"spiffe://example.org/a"}), Ttl: -1}, "invalid ttl -1"},
		{"CSR with a bad signature", &svidv1.MintX509SVIDRequest{Csr: badCSR(t)}, "invalid CSR signature: x509: ECDSA verification failure"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := client.MintX509SVID(ctx, c.req)
			checkStatus(t, err, codes.InvalidArgument, c.msg, 0)
		})
	}

	// Agents may not mint.
	_, err = svidv1.NewSVIDClient(e.as(t, e.agent(t, "a"))).MintX509SVID(ctx, &svidv1.MintX509SVIDRequest{Csr: csr(t, key, []string{"spiffe://example.org/x"})})
	checkStatus(t, err, codes.PermissionDenied, agentID("a")+" is not authorized for /spire.api.server.svid.v1.SVID/MintX509SVID", 0)
}

func TestMintJWTSVID(t *testing.T) {
	e := newEnv(t)
	client := svidv1.NewSVIDClient(e.admin)
	resp, err := client.MintJWTSVID(t.Context(), &svidv1.MintJWTSVIDRequest{Id: id("/minted"), Audience: []string{"db"}})
	if err != nil {
		t.Fatal(err)
	}
	svid, err := jwtsvid.ParseAndValidate(resp.Svid.Token, e.jwtBundle(), []string{"db"})
	if err != nil || svid.ID != spiffeid.RequireFromPath(td, "/minted") {
		t.Errorf("minted JWT-SVID: %v, %v", svid, err)
	}
	_, err = client.MintJWTSVID(t.Context(), &svidv1.MintJWTSVIDRequest{Id: &types.SPIFFEID{TrustDomain: "other.org", Path: "/x"}, Audience: []string{"db"}})
	checkStatus(t, err, codes.InvalidArgument, `"spiffe://other.org/x" is not a member of trust domain "example.org"`, 0)
	_, err = client.MintJWTSVID(t.Context(), &svidv1.MintJWTSVIDRequest{Id: id("/x")})
	checkStatus(t, err, codes.InvalidArgument, "at least one audience is required", 0)
}

func TestGetBundle(t *testing.T) {
	e := newEnv(t)
	// Anyone may fetch the bundle: here a client without a certificate.
	got, err := bundlev1.NewBundleClient(e.anonymous(t)).GetBundle(t.Context(), &bundlev1.GetBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	b := e.ca.Bundle()
	if got.TrustDomain != "example.org" || got.SequenceNumber != b.Sequence || got.RefreshHint != 300 {
		t.Errorf("bundle: trust domain %q, sequence %d, refresh hint %d; want example.org, %d, 300", got.TrustDomain, got.SequenceNumber, got.RefreshHint, b.Sequence)
	}
	if len(got.X509Authorities) != len(b.X509Authorities) || !slices.Equal(got.X509Authorities[0].Asn1, b.X509Authorities[0].Cert.Raw) {
		t.Error("X.509 authorities differ from the CA's")
	}
	if len(got.JwtAuthorities) != 1 || got.JwtAuthorities[0].KeyId != b.JWTAuthorities[0].KeyID || got.JwtAuthorities[0].ExpiresAt != b.JWTAuthorities[0].ExpiresAt.Unix() {
		t.Errorf("JWT authorities = %v, want the CA's", got.JwtAuthorities)
	}

	masked, err := bundlev1.NewBundleClient(e.admin).GetBundle(t.Context(), &bundlev1.GetBundleRequest{OutputMask: &types.BundleMask{SequenceNumber: true}})
	if err != nil {
		t.Fatal(err)
	}
	if len(masked.X509Authorities) != 0 || len(masked.JwtAuthorities) != 0 || masked.SequenceNumber != b.Sequence {
		t.Errorf("masked bundle = %v, want only the sequence number", masked)
	}
}

// Watch sends a message at once, then one after each change.
func TestWatch(t *testing.T) {
	e := newEnv(t)
	a := e.agent(t, "a")
	stream, err := notify.Watch(t.Context(), e.as(t, a))
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil || first.Value != 0 {
		t.Fatalf("first message = %v, %v; want 0", first, err)
	}
	e.createEntries(t, &types.Entry{SpiffeId: id("/w"), ParentId: id("/spire/agent/join_token/a"), Selectors: selectors("unix:uid:1")})
	next, err := stream.Recv()
	if err != nil || next.Value != 1 {
		t.Fatalf("message after an entry was created = %v, %v; want 1", next, err)
	}

	// The admin socket is no agent.
	stream, err = notify.Watch(t.Context(), e.admin)
	if err == nil {
		_, err = stream.Recv()
	}
	checkStatus(t, err, codes.PermissionDenied, "local caller is not authorized for "+notify.WatchMethod, 0)
}
