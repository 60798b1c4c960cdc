package workloadapi

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/plinth-id/plinth/agent/cache"
	"github.com/plinth-id/plinth/attestors"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// fakeAttestor gives every caller the selectors it was built with, after
// checking the kernel identified the caller (this test process).
type fakeAttestor struct{ sels []attestors.Selector }

func (fakeAttestor) Name() string { return "fake" }

func (f fakeAttestor) Attest(_ context.Context, c attestors.Caller) ([]attestors.Selector, error) {
	if int(c.PID) != os.Getpid() || c.StartTime == 0 {
		return nil, errors.New("caller is not this process")
	}
	return f.sels, nil
}

type fixture struct {
	sock   string
	cache  *cache.Cache
	caKey  crypto.Signer
	caCert *x509.Certificate
	jwtKey *ecdsa.PrivateKey
}

func start(t *testing.T, sels ...attestors.Selector) *fixture {
	t.Helper()
	dir, err := os.MkdirTemp("", "wl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	f := &fixture{sock: filepath.Join(dir, "api.sock"), cache: cache.New()}
	f.caKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, URIs: []*url.URL{td.ID().URL()}}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, f.caKey.Public(), f.caKey)
	f.caCert, _ = x509.ParseCertificate(der)
	f.jwtKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s, err := New(Config{
		SocketPath: f.sock, TrustDomain: td, Attestors: []attestors.WorkloadAttestor{fakeAttestor{sels}}, Cache: f.cache,
		FetchJWT: func(_ context.Context, e *cache.Entry, aud []string) (*cache.JWTSVID, error) {
			return &cache.JWTSVID{Token: f.signJWT(t, e.SPIFFEID, aud), ID: e.SPIFFEID}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	for i := 0; i < 200; i++ {
		if _, err := os.Stat(f.sock); err == nil {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	return f
}

func (f *fixture) bundle() *spiffebundle.Bundle {
	b := spiffebundle.New(td)
	b.AddX509Authority(f.caCert)
	b.AddJWTAuthority("kid1", f.jwtKey.Public())
	return b
}

func (f *fixture) signJWT(t *testing.T, id spiffeid.ID, aud []string) string {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: f.jwtKey}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "kid1"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(signer).Claims(jwt.Claims{Subject: id.String(), Audience: aud, Expiry: jwt.NewNumericDate(time.Now().Add(time.Minute))}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// add registers an entry with an SVID signed by the fixture's CA.
func (f *fixture) add(t *testing.T, entries []*cache.Entry) {
	var svids []*cache.X509SVID
	for _, e := range entries {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), URIs: []*url.URL{e.SPIFFEID.URL()}, KeyUsage: x509.KeyUsageDigitalSignature}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, f.caCert, key.Public(), f.caKey)
		if err != nil {
			t.Fatal(err)
		}
		leaf, _ := x509.ParseCertificate(der)
		keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
		svids = append(svids, &cache.X509SVID{EntryID: e.ID, ID: e.SPIFFEID, Chain: []*x509.Certificate{leaf}, Key: key, ChainDER: der, KeyDER: keyDER})
	}
	f.cache.Apply(entries, svids, f.bundle())
}

func uid(n string) attestors.Selector { return attestors.Selector{Type: "unix", Value: "uid:" + n} }

func clientOpt(f *fixture) workloadapi.ClientOption { return workloadapi.WithAddr("unix://" + f.sock) }

func TestMissingHeaderIsRefused(t *testing.T) {
	f := start(t, uid("1"))
	conn, err := grpc.NewClient("unix://"+f.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := workload.NewSpiffeWorkloadAPIClient(conn)
	ctx := context.Background()
	stream, err := c.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	want := status.Error(codes.InvalidArgument, "security header missing from request")
	if status.Code(err) != codes.InvalidArgument || status.Convert(err).Message() != "security header missing from request" {
		t.Fatalf("FetchX509SVID without header = %v, want %v", err, want)
	}
	_, err = c.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"a"}})
	if status.Convert(err).Message() != "security header missing from request" {
		t.Fatalf("FetchJWTSVID without header = %v, want %v", err, want)
	}
	_, err = c.ValidateJWTSVID(ctx, &workload.ValidateJWTSVIDRequest{Audience: "a", Svid: "x"})
	if status.Convert(err).Message() != "security header missing from request" {
		t.Fatalf("ValidateJWTSVID without header = %v, want %v", err, want)
	}
}

func TestUnregisteredCallerGetsNoIdentity(t *testing.T) {
	f := start(t, uid("1"))
	f.add(t, []*cache.Entry{{ID: "e1", SPIFFEID: spiffeid.RequireFromPath(td, "/other"), Selectors: []attestors.Selector{uid("2")}}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := workloadapi.New(ctx, clientOpt(f))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.FetchX509SVID(ctx)
	if status.Code(err) != codes.PermissionDenied || status.Convert(err).Message() != "no identity issued" {
		t.Fatalf("FetchX509SVID = %v, want PermissionDenied: no identity issued", err)
	}
	_, err = c.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "a"})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("FetchJWTSVID = %v, want PermissionDenied", err)
	}
}

func TestFetchAndStream(t *testing.T) {
	f := start(t, uid("1"))
	web := &cache.Entry{ID: "e1", SPIFFEID: spiffeid.RequireFromPath(td, "/web"), Selectors: []attestors.Selector{uid("1")}}
	f.add(t, []*cache.Entry{web})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := workloadapi.New(ctx, clientOpt(f))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	x, err := c.FetchX509Context(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(x.SVIDs) != 1 || x.SVIDs[0].ID != web.SPIFFEID {
		t.Fatalf("got %d SVIDs (%v), want the web SVID", len(x.SVIDs), x.SVIDs)
	}
	if _, err := x.Bundles.GetX509BundleForTrustDomain(td); err != nil {
		t.Fatal(err)
	}

	// A stream sees a new entry without reconnecting.
	updates := make(chan int, 4)
	go c.WatchX509Context(ctx, watcher{updates})
	if n := <-updates; n != 1 {
		t.Fatalf("first update has %d SVIDs, want 1", n)
	}
	db := &cache.Entry{ID: "e2", SPIFFEID: spiffeid.RequireFromPath(td, "/db"), Selectors: []attestors.Selector{uid("1")}}
	f.add(t, []*cache.Entry{web, db})
	if n := <-updates; n != 2 {
		t.Fatalf("second update has %d SVIDs, want 2", n)
	}

	// JWT: fetch, then validate through the same API.
	_, err = c.FetchJWTSVID(ctx, jwtsvid.Params{})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("FetchJWTSVID without audience = %v, want InvalidArgument", err)
	}
	svid, err := c.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "aud", Subject: db.SPIFFEID})
	if err != nil {
		t.Fatal(err)
	}
	if svid.ID != db.SPIFFEID {
		t.Fatalf("JWT-SVID for %s, want %s", svid.ID, db.SPIFFEID)
	}
	v, err := c.ValidateJWTSVID(ctx, svid.Marshal(), "aud")
	if err != nil || v.ID != db.SPIFFEID {
		t.Fatalf("ValidateJWTSVID = %v, %v; want %s", v, err, db.SPIFFEID)
	}
	if _, err := c.ValidateJWTSVID(ctx, svid.Marshal(), "other"); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("ValidateJWTSVID with the wrong audience = %v, want InvalidArgument", err)
	}
	jb, err := c.FetchJWTBundles(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, err := jb.GetJWTBundleForTrustDomain(td)
	if err != nil || len(b.JWTAuthorities()) != 1 {
		t.Fatalf("JWT bundle = %v, %v; want one authority", b, err)
	}
}

type watcher struct{ n chan<- int }

func (w watcher) OnX509ContextUpdate(c *workloadapi.X509Context) { w.n <- len(c.SVIDs) }
func (w watcher) OnX509ContextWatchError(error)                  {}
