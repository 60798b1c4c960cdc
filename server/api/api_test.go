package api_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plinth-id/plinth/attestors"
	"github.com/plinth-id/plinth/attestors/jointoken"
	"github.com/plinth-id/plinth/hsm/memory"
	"github.com/plinth-id/plinth/server/api"
	"github.com/plinth-id/plinth/server/authz"
	"github.com/plinth-id/plinth/server/ca"
	"github.com/plinth-id/plinth/server/datastore"
	"github.com/plinth-id/plinth/server/entries"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

var (
	td       = spiffeid.RequireTrustDomainFromString("example.org")
	serverID = spiffeid.RequireFromPath(td, "/spire/server")
)

// clock is the handlers' and the CA's clock. It starts at the real time,
// truncated to the second, because TLS and go-spiffe check validity against
// the real time; tests move it forward a little where expiry matters.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// storeJournal keeps the CA journal in the datastore, as plinth-server does.
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

// env is a server: real datastore, key manager, CA and entry index behind
// the handlers, served with the authorization interceptors on the admin unix
// socket (callers there are local admins) and on TCP with TLS (agents).
type env struct {
	h     *api.Handlers
	store *datastore.Store
	ca    *ca.CA
	clock *clock

	tcpAddr string
	// admin is a client on the admin socket.
	admin *grpc.ClientConn
}

// newEnv starts a server; edit changes the handlers before they serve.
func newEnv(t *testing.T, edit ...func(*api.Handlers)) *env {
	t.Helper()
	ctx := t.Context()
	dir := t.TempDir()
	if len(dir) > 90 { // a unix socket path has at most 107 bytes
		var err error
		if dir, err = os.MkdirTemp("", "plinth-api"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
	}
	store, err := datastore.Open(ctx, filepath.Join(dir, "ds.sqlite3"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	clk := &clock{t: time.Now().Truncate(time.Second)}
	authority, err := ca.New(ctx, ca.Config{TrustDomain: td, Keys: memory.New(), Journal: storeJournal{store}, Clock: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	h := &api.Handlers{
		TrustDomain: td,
		Store:       store,
		CA:          authority,
		Entries:     entries.New(serverID.String(), nil),
		NodeAttestors: map[string]attestors.NodeAttestor{
			jointoken.Name: jointoken.NewServer(td, redeemFrom(store, clk.now)),
			fakeName:       fakeAttestor{},
		},
		AttestTimeout: 10 * time.Second,
		Clock:         clk.now,
		Log:           slog.New(slog.DiscardHandler),
	}
	for _, f := range edit {
		f(h)
	}
	e := &env{h: h, store: store, ca: authority, clock: clk}

	az := &authz.Authorizer{TrustDomain: td, Agents: store, Methods: api.Methods}
	serve := func(lis net.Listener, opts ...grpc.ServerOption) {
		opts = append(opts, grpc.ChainUnaryInterceptor(az.Unary), grpc.ChainStreamInterceptor(az.Stream))
		g := grpc.NewServer(opts...)
		h.Register(g)
		go g.Serve(lis)
		t.Cleanup(g.Stop)
	}

	sock := filepath.Join(dir, "api.sock")
	udsLis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	serve(udsLis)

	serverKey := newKey(t)
	chain, err := authority.SignX509SVID(ctx, ca.X509Params{ID: serverID, PublicKey: serverKey.Public()})
	if err != nil {
		t.Fatal(err)
	}
	tlsConf := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{{Certificate: [][]byte{chain[0].Raw}, PrivateKey: serverKey, Leaf: chain[0]}},
		ClientAuth:   tls.RequestClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return nil
			}
			_, _, err := x509svid.ParseAndVerify(raw, e.x509Bundle())
			return err
		},
	}
	tcpLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.tcpAddr = tcpLis.Addr().String()
	serve(tcpLis, grpc.Creds(credentials.NewTLS(tlsConf)))

	e.admin = dial(t, "unix://"+sock, insecure.NewCredentials())
	return e
}

func dial(t *testing.T, target string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// x509Bundle is the CA's current X.509 bundle for go-spiffe.
func (e *env) x509Bundle() *x509bundle.Bundle {
	var certs []*x509.Certificate
	for _, a := range e.ca.Bundle().X509Authorities {
		certs = append(certs, a.Cert)
	}
	return x509bundle.FromX509Authorities(td, certs)
}

// anonymous returns a TLS client without a client certificate, as an agent
// that has not attested yet.
func (e *env) anonymous(t *testing.T) *grpc.ClientConn {
	t.Helper()
	return dial(t, e.tcpAddr, credentials.NewTLS(tlsconfig.TLSClientConfig(e.x509Bundle(), tlsconfig.AuthorizeID(serverID))))
}

// as returns a TLS client presenting svid.
func (e *env) as(t *testing.T, svid *x509svid.SVID) *grpc.ClientConn {
	t.Helper()
	return dial(t, e.tcpAddr, credentials.NewTLS(tlsconfig.MTLSClientConfig(svid, e.x509Bundle(), tlsconfig.AuthorizeID(serverID))))
}

// redeemFrom redeems join tokens from the datastore, as plinth-server does.
func redeemFrom(store *datastore.Store, now func() time.Time) jointoken.Redeem {
	return func(ctx context.Context, token string) error {
		_, err := store.ConsumeJoinToken(ctx, token, now())
		switch {
		case errors.Is(err, datastore.ErrNotFound):
			return jointoken.ErrUnknown
		case errors.Is(err, datastore.ErrExpired):
			return jointoken.ErrExpired
		}
		return err
	}
}

// fakeAttestor is a node attestor with one challenge round: the payload is
// the node's name, the challenge "prove <name>", the right answer "<name>
// proven". Nodes named "outsider" get an ID outside /spire/agent/.
type fakeAttestor struct{}

const fakeName = "fake"

func (fakeAttestor) Name() string { return fakeName }

func (fakeAttestor) Attest(ctx context.Context, payload []byte, challenge attestors.Challenge) (*attestors.Result, error) {
	name := string(payload)
	resp, err := challenge(ctx, []byte("prove "+name))
	if err != nil {
		return nil, err
	}
	path := "/spire/agent/fake/" + name
	if name == "outsider" {
		path = "/outsider"
	}
	id := spiffeid.RequireFromPath(td, path)
	if string(resp) == name+" drifted" {
		return nil, &attestors.Disqualification{ID: id, Err: attestors.Rejectf("%s no longer qualifies", name)}
	}
	if string(resp) != name+" proven" {
		return nil, attestors.Rejectf("challenge answered %q, want %q", resp, name+" proven")
	}
	res := &attestors.Result{
		AgentID:     id,
		Selectors:   []attestors.Selector{{Type: "fake", Value: "name:" + name}, {Type: "fake", Value: "az:1"}},
		CanReattest: true,
		Evidence:    map[string]string{"name": name, "detail_json": `{"big":"detail"}`},
	}
	if strings.HasPrefix(name, "short") {
		res.ReattestInterval = time.Minute
	}
	return res, nil
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// csr returns a CSR for key with the given URI and DNS SANs.
func csr(t *testing.T, key crypto.Signer, uris []string, dnsNames ...string) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{DNSNames: dnsNames}
	for _, u := range uris {
		p, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, p)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// badCSR returns a CSR whose signature does not verify.
func badCSR(t *testing.T) []byte {
	t.Helper()
	der := csr(t, newKey(t), nil)
	der[len(der)-1] ^= 0xff
	return der
}

func attestParams(typ string, payload, csr []byte) *agentv1.AttestAgentRequest {
	return &agentv1.AttestAgentRequest{Step: &agentv1.AttestAgentRequest_Params_{Params: &agentv1.AttestAgentRequest_Params{
		Data:   &types.AttestationData{Type: typ, Payload: payload},
		Params: &agentv1.AgentX509SVIDParams{Csr: csr},
	}}}
}

// attest runs a join_token attestation over conn and returns the result,
// or the error the stream ended with.
func attest(t *testing.T, conn *grpc.ClientConn, req *agentv1.AttestAgentRequest) (*agentv1.AttestAgentResponse_Result, error) {
	t.Helper()
	stream, err := agentv1.NewAgentClient(conn).AttestAgent(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(req); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	return resp.GetResult(), nil
}

// createToken creates a join token through the admin API.
func (e *env) createToken(t *testing.T, req *agentv1.CreateJoinTokenRequest) *types.JoinToken {
	t.Helper()
	if req.Ttl == 0 {
		req.Ttl = 600
	}
	jt, err := agentv1.NewAgentClient(e.admin).CreateJoinToken(t.Context(), req)
	if err != nil {
		t.Fatalf("CreateJoinToken: %v", err)
	}
	return jt
}

// agent attests with a new join token named token and returns the agent's
// SVID.
func (e *env) agent(t *testing.T, token string) *x509svid.SVID {
	t.Helper()
	e.createToken(t, &agentv1.CreateJoinTokenRequest{Token: token})
	key := newKey(t)
	res, err := attest(t, e.anonymous(t), attestParams(jointoken.Name, []byte(token), csr(t, key, nil)))
	if err != nil {
		t.Fatalf("AttestAgent: %v", err)
	}
	return svidFrom(t, res.Svid, key)
}

func svidFrom(t *testing.T, p *types.X509SVID, key crypto.Signer) *x509svid.SVID {
	t.Helper()
	var certs []*x509.Certificate
	for _, der := range p.CertChain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	id, err := x509svid.IDFromCert(certs[0])
	if err != nil {
		t.Fatal(err)
	}
	return &x509svid.SVID{ID: id, Certificates: certs, PrivateKey: key}
}

func agentID(token string) string {
	return "spiffe://example.org/spire/agent/join_token/" + token
}

// checkStatus checks err is a gRPC status with code and msg, and with the
// PermissionDeniedDetails reason when reason is not UNKNOWN.
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
	if want := []types.PermissionDeniedDetails_Reason{reason}; reason != types.PermissionDeniedDetails_UNKNOWN && !slices.Equal(got, want) {
		t.Errorf("details = %v, want %v", got, want)
	}
}

// checkResult checks a batch item's status.
func checkResult(t *testing.T, got *types.Status, code codes.Code, msg string) {
	t.Helper()
	if got.GetCode() != int32(code) || got.GetMessage() != msg {
		t.Errorf("status = %v %q, want %v %q", codes.Code(got.GetCode()), got.GetMessage(), code, msg)
	}
}

func id(path string) *types.SPIFFEID { return &types.SPIFFEID{TrustDomain: "example.org", Path: path} }

func selectors(ss ...string) []*types.Selector {
	var out []*types.Selector
	for _, s := range ss {
		p, err := attestors.ParseSelector(s)
		if err != nil {
			panic(err)
		}
		out = append(out, &types.Selector{Type: p.Type, Value: p.Value})
	}
	return out
}

// createEntries creates entries through the admin API and returns them as
// stored.
func (e *env) createEntries(t *testing.T, es ...*types.Entry) []*types.Entry {
	t.Helper()
	resp, err := entryv1.NewEntryClient(e.admin).BatchCreateEntry(t.Context(), &entryv1.BatchCreateEntryRequest{Entries: es})
	if err != nil {
		t.Fatal(err)
	}
	var out []*types.Entry
	for i, r := range resp.Results {
		if r.Status.Code != int32(codes.OK) {
			t.Fatalf("entry %d: %v", i, r.Status)
		}
		out = append(out, r.Entry)
	}
	return out
}

func TestMethodsAreServed(t *testing.T) {
	// Every method in the table exists on a registered service, so a typo
	// in the table cannot silently refuse a method.
	g := grpc.NewServer()
	(&api.Handlers{}).Register(g)
	served := map[string]bool{
		"/grpc.health.v1.Health/Check": true, // registered by the server beside the handlers
		"/grpc.health.v1.Health/Watch": true,
	}
	for name, info := range g.GetServiceInfo() {
		for _, m := range info.Methods {
			served["/"+name+"/"+m.Name] = true
		}
	}
	for m := range api.Methods {
		if !served[m] {
			t.Errorf("api.Methods names %s, which no service serves", m)
		}
	}
	for _, m := range []string{
		"/spire.api.server.agent.v1.Agent/AttestAgent",
		"/spire.api.server.svid.v1.SVID/BatchNewX509SVID",
		"/spire.api.server.bundle.v1.Bundle/GetBundle",
	} {
		if _, ok := api.Methods[m]; !ok {
			t.Errorf("api.Methods lacks %s", m)
		}
	}
}
