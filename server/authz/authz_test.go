package authz_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"math/big"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/plinth-id/plinth/hsm/memory"
	"github.com/plinth-id/plinth/server/authz"
	"github.com/plinth-id/plinth/server/ca"
	"github.com/plinth-id/plinth/server/datastore"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// storeJournal keeps a CA journal in the datastore.
type storeJournal struct{ s *datastore.Store }

func (j storeJournal) Load(ctx context.Context) ([]byte, error) {
	b, err := j.s.Get(ctx, "ca_journal")
	if errors.Is(err, datastore.ErrNotFound) {
		return nil, nil
	}
	return b, err
}

func (j storeJournal) Save(ctx context.Context, data []byte) error {
	return j.s.Put(ctx, "ca_journal", data)
}

func openStore(t *testing.T) *datastore.Store {
	t.Helper()
	s, err := datastore.Open(t.Context(), filepath.Join(t.TempDir(), "ds.sqlite3"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newCA(t *testing.T, td spiffeid.TrustDomain) *ca.CA {
	t.Helper()
	authority, err := ca.New(t.Context(), ca.Config{TrustDomain: td, Keys: memory.New(), Journal: storeJournal{openStore(t)}})
	if err != nil {
		t.Fatal(err)
	}
	return authority
}

// sign returns an X509-SVID leaf for id signed by authority.
func sign(t *testing.T, authority *ca.CA, id string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := authority.SignX509SVID(t.Context(), ca.X509Params{ID: spiffeid.RequireFromString(id), PublicKey: key.Public()})
	if err != nil {
		t.Fatal(err)
	}
	return chain[0]
}

// tlsPeer returns ctx as seen by a handler called over TLS by a client that
// presented leaf (none when leaf is nil).
func tlsPeer(ctx context.Context, leaf *x509.Certificate) context.Context {
	p := &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}}
	if leaf != nil {
		p.AuthInfo = credentials.TLSInfo{State: tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}}}
	}
	return peer.NewContext(ctx, p)
}

// unixPeer returns ctx as seen by a handler called on the admin socket.
func unixPeer(ctx context.Context) context.Context {
	return peer.NewContext(ctx, &peer.Peer{Addr: &net.UnixAddr{Name: "/run/plinth/api.sock", Net: "unix"}})
}

var methods = map[string]authz.Role{
	"/t/Anyone":       authz.Anyone,
	"/t/Local":        authz.Local,
	"/t/Admin":        authz.Admin,
	"/t/Agent":        authz.Agent,
	"/t/AdminOrAgent": authz.Admin | authz.Agent,
}

const (
	adminID   = "spiffe://example.org/admin"
	workload  = "spiffe://example.org/workload"
	goodAgent = "spiffe://example.org/spire/agent/good"
	renewed   = "spiffe://example.org/spire/agent/renewed"
	stale     = "spiffe://example.org/spire/agent/stale"
	banned    = "spiffe://example.org/spire/agent/banned"
	unknown   = "spiffe://example.org/spire/agent/unknown"
)

func TestAuthorize(t *testing.T) {
	ctx := t.Context()
	store := openStore(t)
	authority := newCA(t, td)
	a := &authz.Authorizer{
		TrustDomain: td,
		Agents:      store,
		Methods:     methods,
		IsAdmin:     func(id spiffeid.ID) bool { return id.String() == adminID },
	}

	leaves := map[string]*x509.Certificate{}
	for _, id := range []string{adminID, workload, goodAgent, renewed, stale, banned, unknown} {
		leaves[id] = sign(t, authority, id)
	}
	renewedOld := sign(t, authority, renewed)
	for _, ag := range []*datastore.Agent{
		{ID: goodAgent, AttestationType: "join_token", SerialNumber: leaves[goodAgent].SerialNumber.String()},
		{ID: renewed, AttestationType: "join_token", SerialNumber: renewedOld.SerialNumber.String(), NewSerialNumber: leaves[renewed].SerialNumber.String()},
		{ID: stale, AttestationType: "join_token", SerialNumber: "12345"},
		{ID: banned, AttestationType: "join_token", Banned: true},
	} {
		if err := store.SetAgent(ctx, ag); err != nil {
			t.Fatal(err)
		}
	}
	foreign := sign(t, newCA(t, spiffeid.RequireTrustDomainFromString("other.org")), "spiffe://other.org/spire/agent/x")
	noURI := selfSigned(t)

	for _, c := range []struct {
		name   string
		ctx    context.Context
		method string
		// On success:
		want      authz.Caller
		wantAgent string
		// On failure:
		wantCode   codes.Code
		wantMsg    string
		wantReason types.PermissionDeniedDetails_Reason
	}{
		{
			name: "unknown method", ctx: unixPeer(ctx), method: "/t/Unknown",
			wantCode: codes.PermissionDenied, wantMsg: "method /t/Unknown is not served",
		},
		{
			name: "no peer", ctx: ctx, method: "/t/Anyone",
			wantCode: codes.Unauthenticated, wantMsg: "could not identify caller: no peer",
		},
		{name: "anyone without a certificate", ctx: tlsPeer(ctx, nil), method: "/t/Anyone", want: authz.Caller{}},
		{name: "anyone on the admin socket", ctx: unixPeer(ctx), method: "/t/Anyone", want: authz.Caller{Local: true}},
		{
			name: "anyone with an SVID", ctx: tlsPeer(ctx, leaves[workload]), method: "/t/Anyone",
			want: authz.Caller{ID: spiffeid.RequireFromString(workload)},
		},
		{name: "local", ctx: unixPeer(ctx), method: "/t/Local", want: authz.Caller{Local: true, Admin: true}},
		{name: "local is admin", ctx: unixPeer(ctx), method: "/t/Admin", want: authz.Caller{Local: true, Admin: true}},
		{
			name: "local is not an agent", ctx: unixPeer(ctx), method: "/t/Agent",
			wantCode: codes.PermissionDenied, wantMsg: "local caller is not authorized for /t/Agent",
		},
		{
			name: "admin by admin_ids", ctx: tlsPeer(ctx, leaves[adminID]), method: "/t/Admin",
			want: authz.Caller{ID: spiffeid.RequireFromString(adminID), Admin: true},
		},
		{
			name: "admin over TLS is not local", ctx: tlsPeer(ctx, leaves[adminID]), method: "/t/Local",
			wantCode: codes.PermissionDenied, wantMsg: "spiffe://example.org/admin is not authorized for /t/Local",
		},
		{
			name: "workload is not admin", ctx: tlsPeer(ctx, leaves[workload]), method: "/t/Admin",
			wantCode: codes.PermissionDenied, wantMsg: "spiffe://example.org/workload is not authorized for /t/Admin",
		},
		{
			name: "workload is not an agent", ctx: tlsPeer(ctx, leaves[workload]), method: "/t/Agent",
			wantCode: codes.PermissionDenied, wantMsg: "spiffe://example.org/workload is not authorized for /t/Agent",
		},
		{
			name: "admin method without an SVID", ctx: tlsPeer(ctx, nil), method: "/t/Admin",
			wantCode: codes.PermissionDenied, wantMsg: "/t/Admin requires an X509-SVID (or the local admin socket)",
		},
		{
			name: "agent with its current SVID", ctx: tlsPeer(ctx, leaves[goodAgent]), method: "/t/Agent",
			want: authz.Caller{ID: spiffeid.RequireFromString(goodAgent)}, wantAgent: goodAgent,
		},
		{
			name: "agent on an admin-or-agent method", ctx: tlsPeer(ctx, leaves[goodAgent]), method: "/t/AdminOrAgent",
			want: authz.Caller{ID: spiffeid.RequireFromString(goodAgent)}, wantAgent: goodAgent,
		},
		{
			name: "agent is not admin", ctx: tlsPeer(ctx, leaves[goodAgent]), method: "/t/Admin",
			wantCode: codes.PermissionDenied, wantMsg: "spiffe://example.org/spire/agent/good is not authorized for /t/Admin",
		},
		{
			name: "agent with its renewed SVID", ctx: tlsPeer(ctx, leaves[renewed]), method: "/t/Agent",
			want: authz.Caller{ID: spiffeid.RequireFromString(renewed)}, wantAgent: renewed,
		},
		{
			name: "agent with a stale SVID", ctx: tlsPeer(ctx, leaves[stale]), method: "/t/Agent",
			wantCode: codes.PermissionDenied, wantReason: types.PermissionDeniedDetails_AGENT_NOT_ACTIVE,
			wantMsg: "agent spiffe://example.org/spire/agent/stale presented an SVID (serial " + leaves[stale].SerialNumber.String() + ") that is no longer its current one",
		},
		{
			name: "banned agent", ctx: tlsPeer(ctx, leaves[banned]), method: "/t/Agent",
			wantCode: codes.PermissionDenied, wantReason: types.PermissionDeniedDetails_AGENT_BANNED,
			wantMsg: "agent spiffe://example.org/spire/agent/banned is banned",
		},
		{
			name: "unknown agent", ctx: tlsPeer(ctx, leaves[unknown]), method: "/t/Agent",
			wantCode: codes.PermissionDenied, wantReason: types.PermissionDeniedDetails_AGENT_NOT_ATTESTED,
			wantMsg: "agent spiffe://example.org/spire/agent/unknown is not attested (evicted or never attested); it must attest again",
		},
		{
			name: "SVID of another trust domain", ctx: tlsPeer(ctx, foreign), method: "/t/Anyone",
			wantCode: codes.Unauthenticated,
			wantMsg:  "could not identify caller: SVID spiffe://other.org/spire/agent/x is not in trust domain example.org",
		},
		{
			name: "certificate without a SPIFFE ID", ctx: tlsPeer(ctx, noURI), method: "/t/Anyone",
			wantCode: codes.Unauthenticated, wantMsg: "could not identify caller: certificate contains no URI SAN",
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			var got authz.Caller
			called := false
			_, err := a.Unary(c.ctx, "req", &grpc.UnaryServerInfo{FullMethod: c.method}, func(ctx context.Context, req any) (any, error) {
				called = true
				got = authz.CallerFrom(ctx)
				return "resp", nil
			})
			if c.wantCode != codes.OK {
				checkStatus(t, err, c.wantCode, c.wantMsg, c.wantReason)
				if called {
					t.Error("the handler ran for a refused call")
				}
				return
			}
			if err != nil {
				t.Fatalf("Unary: %v", err)
			}
			gotAgent := ""
			if got.Agent != nil {
				gotAgent = got.Agent.ID
			}
			if gotAgent != c.wantAgent {
				t.Errorf("caller agent = %q, want %q", gotAgent, c.wantAgent)
			}
			got.Agent = nil
			if got != c.want {
				t.Errorf("caller = %+v, want %+v", got, c.want)
			}
		})
	}

	// The renewed SVID became current; the old one is now refused.
	ag, err := store.GetAgent(ctx, renewed)
	if err != nil {
		t.Fatal(err)
	}
	if ag.SerialNumber != leaves[renewed].SerialNumber.String() || ag.NewSerialNumber != "" || ag.ExpiresAt != leaves[renewed].NotAfter.Unix() {
		t.Errorf("renewed agent = serial %s, new serial %q, expires %d; want serial %s, no new serial, expires %d",
			ag.SerialNumber, ag.NewSerialNumber, ag.ExpiresAt, leaves[renewed].SerialNumber, leaves[renewed].NotAfter.Unix())
	}
	_, err = a.Unary(tlsPeer(ctx, renewedOld), nil, &grpc.UnaryServerInfo{FullMethod: "/t/Agent"}, func(context.Context, any) (any, error) { return nil, nil })
	checkStatus(t, err, codes.PermissionDenied,
		"agent "+renewed+" presented an SVID (serial "+renewedOld.SerialNumber.String()+") that is no longer its current one",
		types.PermissionDeniedDetails_AGENT_NOT_ACTIVE)
}

func checkStatus(t *testing.T, err error, code codes.Code, msg string, reason types.PermissionDeniedDetails_Reason) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok || st.Code() != code || st.Message() != msg {
		t.Fatalf("error = %v, want %v %q", err, code, msg)
	}
	var got []types.PermissionDeniedDetails_Reason
	for _, d := range st.Details() {
		if pd, ok := d.(*types.PermissionDeniedDetails); ok {
			got = append(got, pd.Reason)
		}
	}
	switch {
	case reason == types.PermissionDeniedDetails_UNKNOWN && len(got) != 0:
		t.Errorf("details = %v, want none", got)
	case reason != types.PermissionDeniedDetails_UNKNOWN && (len(got) != 1 || got[0] != reason):
		t.Errorf("details = %v, want [%v]", got, reason)
	}
}

// fakeStream is the server side of a stream, with its context.
type fakeStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s fakeStream) Context() context.Context { return s.ctx }

func TestStream(t *testing.T) {
	a := &authz.Authorizer{TrustDomain: td, Agents: openStore(t), Methods: methods}
	var got authz.Caller
	err := a.Stream(nil, fakeStream{ctx: unixPeer(t.Context())}, &grpc.StreamServerInfo{FullMethod: "/t/Admin"}, func(_ any, ss grpc.ServerStream) error {
		got = authz.CallerFrom(ss.Context())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := (authz.Caller{Local: true, Admin: true}); got != want {
		t.Errorf("caller = %+v, want %+v", got, want)
	}

	err = a.Stream(nil, fakeStream{ctx: tlsPeer(t.Context(), nil)}, &grpc.StreamServerInfo{FullMethod: "/t/Agent"}, func(any, grpc.ServerStream) error {
		t.Error("the handler ran for a refused stream")
		return nil
	})
	checkStatus(t, err, codes.PermissionDenied, "/t/Agent requires an X509-SVID (or the local admin socket)", types.PermissionDeniedDetails_UNKNOWN)
}

func TestDenied(t *testing.T) {
	err := authz.Denied(types.PermissionDeniedDetails_AGENT_MUST_REATTEST, "agent %s must attest again", "x")
	checkStatus(t, err, codes.PermissionDenied, "agent x must attest again", types.PermissionDeniedDetails_AGENT_MUST_REATTEST)
}

// selfSigned returns a certificate with no URI SAN.
func selfSigned(t *testing.T) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}
