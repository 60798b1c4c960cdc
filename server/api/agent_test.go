package api_test

import (
	"errors"
	"google.golang.org/grpc/status"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/plinth-id/plinth/attestors"
	"github.com/plinth-id/plinth/server/api"
	"github.com/plinth-id/plinth/server/datastore"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
)

func TestCreateJoinToken(t *testing.T) {
	e := newEnv(t)
	client := agentv1.NewAgentClient(e.admin)
	ctx := t.Context()

	jt, err := client.CreateJoinToken(ctx, &agentv1.CreateJoinTokenRequest{Ttl: 60})
	if err != nil {
		t.Fatal(err)
	}
	if len(jt.Value) != 36 || jt.ExpiresAt != e.clock.now().Add(time.Minute).Unix() {
		t.Errorf("token = %q expiring at %d; want a UUID expiring at %d", jt.Value, jt.ExpiresAt, e.clock.now().Add(time.Minute).Unix())
	}
	jt, err = client.CreateJoinToken(ctx, &agentv1.CreateJoinTokenRequest{Ttl: 60, Token: "chosen"})
	if err != nil || jt.Value != "chosen" {
		t.Fatalf("CreateJoinToken with a value = %v, %v; want the value", jt, err)
	}

	for _, c := range []struct {
		name string
		req  *agentv1.CreateJoinTokenRequest
		code codes.Code
		msg  string
	}{
		{"no TTL", &agentv1.CreateJoinTokenRequest{}, codes.InvalidArgument, "ttl is required and must be at least 1 second"},
		{"negative TTL", &agentv1.CreateJoinTokenRequest{Ttl: -5}, codes.InvalidArgument, "ttl is required and must be at least 1 second"},
		{"token with a slash", &agentv1.CreateJoinTokenRequest{Ttl: 60, Token: "a/b"}, codes.InvalidArgument, `invalid token "a/b": it may not contain '/' or spaces`},
		{"token that is no path segment", &agentv1.CreateJoinTokenRequest{Ttl: 60, Token: "tok$"}, codes.InvalidArgument,
			`invalid token "tok$": path segment characters are limited to letters, numbers, dots, dashes, and underscores`},
		{"token with a newline", &agentv1.CreateJoinTokenRequest{Ttl: 60, Token: "tok\n"}, codes.InvalidArgument,
			`invalid token "tok\n": path segment characters are limited to letters, numbers, dots, dashes, and underscores`},
		{"duplicate", &agentv1.CreateJoinTokenRequest{Ttl: 60, Token: "chosen"}, codes.AlreadyExists, "a join token with that value already exists"},
		{"alias in another trust domain", &agentv1.CreateJoinTokenRequest{Ttl: 60, AgentId: &types.SPIFFEID{TrustDomain: "other.org", Path: "/node"}},
			codes.InvalidArgument, `invalid agent_id: "spiffe://other.org/node" is not a member of trust domain "example.org"`},
		{"invalid alias", &agentv1.CreateJoinTokenRequest{Ttl: 60, AgentId: id("node")},
			codes.InvalidArgument, `invalid agent_id: invalid SPIFFE ID "spiffe://example.orgnode": path must have a leading slash`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := client.CreateJoinToken(ctx, c.req)
			checkStatus(t, err, c.code, c.msg, 0)
			if c.req.Token != "" && c.code == codes.InvalidArgument {
				// Nothing was stored: no unredeemable token is left behind.
				if _, err := e.store.ConsumeJoinToken(ctx, c.req.Token, e.clock.now()); !errors.Is(err, datastore.ErrNotFound) {
					t.Errorf("the refused token was stored: ConsumeJoinToken error = %v", err)
				}
			}
		})
	}
}

// A token created with agent_id (`token generate -spiffeID`) registers that
// ID as an alias of the agent that redeems it: workload entries can name the
// alias as their parent.
func TestCreateJoinTokenAlias(t *testing.T) {
	e := newEnv(t)
	e.createToken(t, &agentv1.CreateJoinTokenRequest{Token: "aliased", AgentId: id("/node/db")})

	var alias *datastore.Entry
	for _, en := range e.h.Entries.Authorized(agentID("aliased"), nil) {
		alias = en
	}
	want := &datastore.Entry{
		SPIFFEID:  "spiffe://example.org/node/db",
		ParentID:  agentID("aliased"),
		Selectors: []attestors.Selector{{Type: "spiffe_id", Value: agentID("aliased")}},
	}
	if alias == nil || alias.SPIFFEID != want.SPIFFEID || alias.ParentID != want.ParentID || !slices.Equal(alias.Selectors, want.Selectors) {
		t.Fatalf("alias entry = %+v, want %+v", alias, want)
	}

	workload := e.createEntries(t, &types.Entry{SpiffeId: id("/db"), ParentId: id("/node/db"), Selectors: selectors("unix:uid:1")})[0]
	key := newKey(t)
	res, err := attest(t, e.anonymous(t), attestParams("join_token", []byte("aliased"), csr(t, key, nil)))
	if err != nil {
		t.Fatalf("AttestAgent: %v", err)
	}
	conn := e.as(t, svidFrom(t, res.Svid, key))
	resp, err := entryv1.NewEntryClient(conn).GetAuthorizedEntries(t.Context(), &entryv1.GetAuthorizedEntriesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, en := range resp.Entries {
		got = append(got, en.Id)
	}
	if want := []string{alias.ID, workload.Id}; !slices.Equal(sorted(got), sorted(want)) {
		t.Errorf("authorized entries = %v, want the alias and its child %v", got, want)
	}
}

func sorted(s []string) []string { return slices.Sorted(slices.Values(s)) }

func TestAttestAgent(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	e.createToken(t, &agentv1.CreateJoinTokenRequest{Token: "t1"})
	key := newKey(t)
	res, err := attest(t, e.anonymous(t), attestParams("join_token", []byte("t1"), csr(t, key, nil)))
	if err != nil {
		t.Fatalf("AttestAgent: %v", err)
	}
	if res.Reattestable {
		t.Error("a join-token agent is reported reattestable")
	}
	if got := res.Svid.Id; got.TrustDomain != "example.org" || got.Path != "/spire/agent/join_token/t1" {
		t.Errorf("SVID ID = %v, want spiffe://example.org/spire/agent/join_token/t1", got)
	}
	svid := svidFrom(t, res.Svid, key)
	leaf := svid.Certificates[0]
	if _, _, err := x509svid.Verify(svid.Certificates, e.x509Bundle()); err != nil {
		t.Errorf("agent SVID does not verify: %v", err)
	}
	if !key.PublicKey.Equal(leaf.PublicKey) {
		t.Error("agent SVID does not certify the CSR's key")
	}
	if want := e.clock.now().Add(time.Hour); !leaf.NotAfter.Equal(want) || res.Svid.ExpiresAt != want.Unix() {
		t.Errorf("agent SVID expires at %v (reported %d), want the CA's default TTL: %v", leaf.NotAfter, res.Svid.ExpiresAt, want)
	}

	a, err := e.store.GetAgent(ctx, agentID("t1"))
	if err != nil {
		t.Fatal(err)
	}
	if a.AttestationType != "join_token" || a.SerialNumber != leaf.SerialNumber.String() || a.ExpiresAt != leaf.NotAfter.Unix() ||
		a.CanReattest || a.Banned || !maps.Equal(a.Evidence, map[string]string{"join_token": "redeemed"}) {
		t.Errorf("agent record = %+v", a)
	}
	records, err := e.store.ListAudit(ctx, agentID("t1"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(records) != 1 || records[0].Kind != "attest" || records[0].Decision != "allow" || records[0].Reason != "attested by join_token" ||
		records[0].Time != e.clock.now().Unix() {
		t.Errorf("audit records = %+v, want one allowed attestation", records)
	}

	// The SVID works as the agent's credential.
	if _, err := entryv1.NewEntryClient(e.as(t, svid)).GetAuthorizedEntries(ctx, &entryv1.GetAuthorizedEntriesRequest{}); err != nil {
		t.Errorf("GetAuthorizedEntries with the new SVID: %v", err)
	}
}

func TestAttestAgentErrors(t *testing.T) {
	for _, c := range []struct {
		name   string
		setup  func(t *testing.T, e *env)
		req    func(t *testing.T) *agentv1.AttestAgentRequest
		code   codes.Code
		msg    string
		reason types.PermissionDeniedDetails_Reason
		// audit is the subject of the deny record the attempt leaves.
		audit string
		// agents is how many agents exist afterwards.
		agents int
	}{
		{
			name:  "reused token",
			setup: func(t *testing.T, e *env) { e.agent(t, "used") },
			req: func(t *testing.T) *agentv1.AttestAgentRequest {
				return attestParams("join_token", []byte("used"), csr(t, newKey(t), nil))
			},
			code:   codes.PermissionDenied,
			msg:    "failed to attest: attestation rejected: join token does not exist or has already been used",
			audit:  "join_token",
			agents: 1,
		},
		{
			name: "expired token",
			setup: func(t *testing.T, e *env) {
				e.createToken(t, &agentv1.CreateJoinTokenRequest{Token: "old", Ttl: 1})
				e.clock.advance(time.Second)
			},
			req: func(t *testing.T) *agentv1.AttestAgentRequest {
				return attestParams("join_token", []byte("old"), csr(t, newKey(t), nil))
			},
			code:  codes.PermissionDenied,
			msg:   "failed to attest: attestation rejected: join token expired",
			audit: "join_token",
		},
		{
			name: "unknown attestation type",
			req: func(t *testing.T) *agentv1.AttestAgentRequest {
				return attestParams("tpm", []byte("x"), csr(t, newKey(t), nil))
			},
			code: codes.InvalidArgument,
			msg:  `attestation type "tpm" is not enabled on this server (enabled: fake, join_token)`,
		},
		{
			name: "missing CSR",
			req:  func(t *testing.T) *agentv1.AttestAgentRequest { return attestParams("join_token", []byte("x"), nil) },
			code: codes.InvalidArgument,
			msg:  "malformed attestation request: missing CSR for the agent SVID",
		},
		{
			name: "malformed CSR",
			req: func(t *testing.T) *agentv1.AttestAgentRequest {
				return attestParams("join_token", []byte("x"), badCSR(t))
			},
			code: codes.InvalidArgument,
			msg:  "malformed attestation request: invalid CSR signature: x509: ECDSA verification failure",
		},
		{
			name: "no params",
			req:  func(t *testing.T) *agentv1.AttestAgentRequest { return &agentv1.AttestAgentRequest{} },
			code: codes.InvalidArgument,
			msg:  "malformed attestation request: the first message must carry params with attestation data",
		},
		{
			name: "banned agent",
			setup: func(t *testing.T, e *env) {
				if err := e.store.SetAgent(t.Context(), &datastore.Agent{ID: agentID("banned"), AttestationType: "join_token", Banned: true}); err != nil {
					t.Fatal(err)
				}
				e.createToken(t, &agentv1.CreateJoinTokenRequest{Token: "banned"})
			},
			req: func(t *testing.T) *agentv1.AttestAgentRequest {
				return attestParams("join_token", []byte("banned"), csr(t, newKey(t), nil))
			},
			code:   codes.PermissionDenied,
			msg:    "failed to attest: agent " + agentID("banned") + " is banned",
			reason: types.PermissionDeniedDetails_AGENT_BANNED,
			audit:  agentID("banned"),
			agents: 1,
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			if c.setup != nil {
				c.setup(t, e)
			}
			res, err := attest(t, e.anonymous(t), c.req(t))
			checkStatus(t, err, c.code, c.msg, c.reason)
			if res != nil {
				t.Error("a result came with the error")
			}
			checkAgents(t, e, c.agents)
			if c.name == "banned agent" {
				if a, _ := e.store.GetAgent(t.Context(), agentID("banned")); a == nil || !a.Banned || a.SerialNumber != "" {
					t.Errorf("banned agent record = %+v, want it unchanged", a)
				}
			}
			if c.audit != "" {
				records, err := e.store.ListAudit(t.Context(), c.audit, 1)
				if err != nil {
					t.Fatal(err)
				}
				if len(records) != 1 || records[0].Decision != "deny" || records[0].Kind != "attest" {
					t.Errorf("audit records for %s = %+v, want a denied attestation", c.audit, records)
				}
			}
		})
	}
}

func checkAgents(t *testing.T, e *env, want int) {
	t.Helper()
	agents, err := e.store.ListAgents(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(agents) != want {
		t.Errorf("%d agents recorded, want %d", len(agents), want)
	}
}

// A client that opens the stream and sends nothing, or stops answering
// challenges, is cut off after AttestTimeout.
func TestAttestAgentTimeout(t *testing.T) {
	e := newEnv(t, func(h *api.Handlers) { h.AttestTimeout = 100 * time.Millisecond })
	stream, err := agentv1.NewAgentClient(e.anonymous(t)).AttestAgent(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	_, err = stream.Recv()
	checkStatus(t, err, codes.DeadlineExceeded, "attestation timed out waiting for the agent", 0)

	stream, err = agentv1.NewAgentClient(e.anonymous(t)).AttestAgent(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(attestParams(fakeName, []byte("slow"), csr(t, newKey(t), nil))); err != nil {
		t.Fatal(err)
	}
	if resp, err := stream.Recv(); err != nil || string(resp.GetChallenge()) != "prove slow" {
		t.Fatalf("first response = %v, %v; want the challenge", resp, err)
	}
	_, err = stream.Recv()
	checkStatus(t, err, codes.DeadlineExceeded, "attestation timed out waiting for the agent", 0)
	checkAgents(t, e, 0)

	// The refusal is audited although the attestation's context has ended.
	records, err := e.store.ListAudit(t.Context(), fakeName, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(records) != 1 || records[0].Decision != "deny" ||
		records[0].Reason != "rpc error: code = DeadlineExceeded desc = attestation timed out waiting for the agent" {
		t.Errorf("audit records = %+v, want the timed-out attestation denied", records)
	}
}

// attestFake runs the fake attestor's challenge round with answer.
func attestFake(t *testing.T, e *env, name, answer string) (*x509svid.SVID, error) {
	t.Helper()
	stream, err := agentv1.NewAgentClient(e.anonymous(t)).AttestAgent(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	key := newKey(t)
	if err := stream.Send(attestParams(fakeName, []byte(name), csr(t, key, nil))); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	if got, want := string(resp.GetChallenge()), "prove "+name; got != want {
		t.Fatalf("challenge = %q, want %q", got, want)
	}
	if err := stream.Send(&agentv1.AttestAgentRequest{Step: &agentv1.AttestAgentRequest_ChallengeResponse{ChallengeResponse: []byte(answer)}}); err != nil {
		t.Fatal(err)
	}
	resp, err = stream.Recv()
	if err != nil {
		return nil, err
	}
	if !resp.GetResult().GetReattestable() {
		t.Error("the fake attestor's agent is not reported reattestable")
	}
	return svidFrom(t, resp.GetResult().GetSvid(), key), nil
}

func TestAttestAgentChallenge(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	svid, err := attestFake(t, e, "n1", "n1 proven")
	if err != nil {
		t.Fatalf("AttestAgent: %v", err)
	}
	if got := svid.ID.String(); got != "spiffe://example.org/spire/agent/fake/n1" {
		t.Errorf("agent ID = %s", got)
	}
	a, err := e.store.GetAgent(ctx, svid.ID.String())
	if err != nil {
		t.Fatal(err)
	}
	if want := []attestors.Selector{{Type: "fake", Value: "az:1"}, {Type: "fake", Value: "name:n1"}}; !slices.Equal(a.Selectors, want) || !a.CanReattest {
		t.Errorf("agent selectors = %v, reattest %v; want %v (sorted), true", a.Selectors, a.CanReattest, want)
	}

	// An agent that can attest again renews by attesting, not with RenewAgent.
	_, err = agentv1.NewAgentClient(e.as(t, svid)).RenewAgent(ctx, &agentv1.RenewAgentRequest{Params: &agentv1.AgentX509SVIDParams{Csr: csr(t, newKey(t), nil)}})
	checkStatus(t, err, codes.PermissionDenied, "agent spiffe://example.org/spire/agent/fake/n1 must renew by attesting again",
		types.PermissionDeniedDetails_AGENT_MUST_REATTEST)

	_, err = attestFake(t, e, "n2", "wrong")
	checkStatus(t, err, codes.PermissionDenied, `failed to attest: attestation rejected: challenge answered "wrong", want "n2 proven"`, 0)

	_, err = attestFake(t, e, "outsider", "outsider proven")
	checkStatus(t, err, codes.Internal, `attestor "fake" produced agent ID "spiffe://example.org/outsider" outside spiffe://example.org/spire/agent/`, 0)
	checkAgents(t, e, 1)
}

func TestRenewAgent(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	old := e.agent(t, "r1")
	oldConn := e.as(t, old)

	_, err := agentv1.NewAgentClient(oldConn).RenewAgent(ctx, &agentv1.RenewAgentRequest{})
	checkStatus(t, err, codes.InvalidArgument, "missing CSR", 0)

	key := newKey(t)
	resp, err := agentv1.NewAgentClient(oldConn).RenewAgent(ctx, &agentv1.RenewAgentRequest{Params: &agentv1.AgentX509SVIDParams{Csr: csr(t, key, nil)}})
	if err != nil {
		t.Fatal(err)
	}
	renewed := svidFrom(t, resp.Svid, key)
	if renewed.ID != old.ID {
		t.Errorf("renewed SVID is for %v, want %v", renewed.ID, old.ID)
	}
	oldSerial, newSerial := old.Certificates[0].SerialNumber.String(), renewed.Certificates[0].SerialNumber.String()
	a, err := e.store.GetAgent(ctx, agentID("r1"))
	if err != nil {
		t.Fatal(err)
	}
	if a.SerialNumber != oldSerial || a.NewSerialNumber != newSerial {
		t.Errorf("after RenewAgent: serial %s, new serial %s; want %s, %s", a.SerialNumber, a.NewSerialNumber, oldSerial, newSerial)
	}
	if records, _ := e.store.ListAudit(ctx, agentID("r1"), 1); len(records) != 1 || records[0].Kind != "renew" {
		t.Errorf("last audit record = %+v, want a renewal", records)
	}

	// Until the new SVID is used, the old one still works.
	authorized := func(svid *x509svid.SVID) error {
		_, err := entryv1.NewEntryClient(e.as(t, svid)).GetAuthorizedEntries(ctx, &entryv1.GetAuthorizedEntriesRequest{})
		return err
	}
	if err := authorized(old); err != nil {
		t.Fatalf("old SVID before the new one is used: %v", err)
	}
	if err := authorized(renewed); err != nil {
		t.Fatalf("renewed SVID: %v", err)
	}
	a, _ = e.store.GetAgent(ctx, agentID("r1"))
	if a.SerialNumber != newSerial || a.NewSerialNumber != "" {
		t.Errorf("after the renewed SVID was used: serial %s, new serial %q; want %s and none", a.SerialNumber, a.NewSerialNumber, newSerial)
	}
	checkStatus(t, authorized(old), codes.PermissionDenied,
		"agent "+agentID("r1")+" presented an SVID (serial "+oldSerial+") that is no longer its current one",
		types.PermissionDeniedDetails_AGENT_NOT_ACTIVE)
}

func TestBanAndDeleteAgent(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	svid := e.agent(t, "b1")
	admin := agentv1.NewAgentClient(e.admin)
	call := func() error {
		_, err := entryv1.NewEntryClient(e.as(t, svid)).GetAuthorizedEntries(ctx, &entryv1.GetAuthorizedEntriesRequest{})
		return err
	}

	got, err := admin.GetAgent(ctx, &agentv1.GetAgentRequest{Id: id("/spire/agent/join_token/b1")})
	if err != nil {
		t.Fatal(err)
	}
	if got.AttestationType != "join_token" || got.X509SvidSerialNumber != svid.Certificates[0].SerialNumber.String() || got.Banned {
		t.Errorf("GetAgent = %v", got)
	}

	if _, err := admin.BanAgent(ctx, &agentv1.BanAgentRequest{Id: id("/spire/agent/join_token/b1")}); err != nil {
		t.Fatal(err)
	}
	checkStatus(t, call(), codes.PermissionDenied, "agent "+agentID("b1")+" is banned", types.PermissionDeniedDetails_AGENT_BANNED)

	if _, err := admin.DeleteAgent(ctx, &agentv1.DeleteAgentRequest{Id: id("/spire/agent/join_token/b1")}); err != nil {
		t.Fatal(err)
	}
	checkStatus(t, call(), codes.PermissionDenied,
		"agent "+agentID("b1")+" is not attested (evicted or never attested); it must attest again",
		types.PermissionDeniedDetails_AGENT_NOT_ATTESTED)

	_, err = admin.GetAgent(ctx, &agentv1.GetAgentRequest{Id: id("/spire/agent/join_token/b1")})
	checkStatus(t, err, codes.NotFound, "agent "+agentID("b1")+" not found", 0)

	// Admin methods are refused to agents.
	other := e.agent(t, "b2")
	_, err = agentv1.NewAgentClient(e.as(t, other)).BanAgent(ctx, &agentv1.BanAgentRequest{Id: id("/spire/agent/join_token/b2")})
	checkStatus(t, err, codes.PermissionDenied, agentID("b2")+" is not authorized for /spire.api.server.agent.v1.Agent/BanAgent", 0)
}

// A node that proved who it is but no longer qualifies is evicted at once:
// its current SVID stops working; a banned node stays banned.
func TestAttestAgentDisqualification(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	svid, err := attestFake(t, e, "n1", "n1 proven")
	if err != nil {
		t.Fatal(err)
	}
	a, err := e.store.GetAgent(ctx, svid.ID.String())
	if err != nil || a.Evidence["detail_json"] == "" {
		t.Fatalf("agent record %+v (%v): the _json detail is kept with the agent", a, err)
	}
	records, _ := e.store.ListAudit(ctx, svid.ID.String(), 0)
	if len(records) != 1 || records[0].Details["detail_json"] != "" || records[0].Details["name"] != "n1" {
		t.Fatalf("audit %+v: the _json detail stays out of the audit log", records)
	}

	_, err = attestFake(t, e, "n1", "n1 drifted")
	checkStatus(t, err, codes.PermissionDenied, "failed to attest: attestation rejected: n1 no longer qualifies", 0)
	checkAgents(t, e, 0)
	records, _ = e.store.ListAudit(ctx, svid.ID.String(), 0)
	if len(records) != 3 || records[0].Kind != "evict" || records[0].Reason != "disqualified: attestation rejected: n1 no longer qualifies" {
		t.Fatalf("audit %+v: want the refusal and the eviction", records)
	}
	_, err = agentv1.NewAgentClient(e.as(t, svid)).RenewAgent(ctx, &agentv1.RenewAgentRequest{Params: &agentv1.AgentX509SVIDParams{Csr: csr(t, newKey(t), nil)}})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("the disqualified agent's SVID still works: %v", err)
	}

	// A banned agent is not deleted (that would lift the ban).
	svid, _ = attestFake(t, e, "n2", "n2 proven")
	if _, err := agentv1.NewAgentClient(e.admin).BanAgent(ctx, &agentv1.BanAgentRequest{Id: &types.SPIFFEID{TrustDomain: "example.org", Path: svid.ID.Path()}}); err != nil {
		t.Fatal(err)
	}
	attestFake(t, e, "n2", "n2 drifted")
	if a, err := e.store.GetAgent(ctx, svid.ID.String()); err != nil || !a.Banned {
		t.Fatalf("banned agent after disqualification: %+v, %v", a, err)
	}
}

// A re-attestation interval caps the agent SVID's life at twice the
// interval, so the agent attests again at least that often.
func TestAttestAgentReattestInterval(t *testing.T) {
	e := newEnv(t)
	svid, err := attestFake(t, e, "short1", "short1 proven")
	if err != nil {
		t.Fatal(err)
	}
	cert := svid.Certificates[0]
	if life := cert.NotAfter.Sub(cert.NotBefore); life > 2*time.Minute+15*time.Second {
		t.Fatalf("agent SVID lives %v, want at most 2m plus backdating", life)
	}
}
