package bench

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/plinth-id/plinth/test/harness"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func adminConn(b *testing.B, s *harness.Server) *grpc.ClientConn {
	conn, err := grpc.NewClient("unix://"+s.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return conn
}

func testEntry(i int) *types.Entry {
	return &types.Entry{
		SpiffeId:  &types.SPIFFEID{TrustDomain: harness.TrustDomain, Path: fmt.Sprintf("/bench/%d", i)},
		ParentId:  &types.SPIFFEID{TrustDomain: harness.TrustDomain, Path: "/node"},
		Selectors: []*types.Selector{{Type: "unix", Value: fmt.Sprintf("uid:%d", i)}},
	}
}

// BenchmarkServer measures, on the real plinth-server binary: entry creation
// rate as the store grows to 10,000 entries (one entry per call, like the
// CLI), MintX509SVID from one client, and the server's heap idle and with
// 10,000 entries.
func BenchmarkServer(b *testing.B) {
	ctx := context.Background()
	s := harness.StartServer(b, bin)
	conn := adminConn(b, s)

	idle, err := s.Proc.Heap(ctx)
	if err != nil {
		b.Fatal(err)
	}
	record("server heap, idle", mb(idle), "<= 8.5 MB (SPIRE 17)", idle <= 17<<20/2)

	client := entryv1.NewEntryClient(conn)
	const total, window = 10000, 1000
	var first, last float64
	start := time.Now()
	for i := range total {
		resp, err := client.BatchCreateEntry(ctx, &entryv1.BatchCreateEntryRequest{Entries: []*types.Entry{testEntry(i)}})
		if err != nil || resp.Results[0].Status.Code != 0 {
			b.Fatalf("create entry %d: %v %v", i, err, resp)
		}
		if i+1 == window {
			first = window / time.Since(start).Seconds()
		}
		if i+1 == total-window {
			start = time.Now()
		}
	}
	last = window / time.Since(start).Seconds()
	b.ReportMetric(last, "entries/s@10k")
	record("entry creation at 10,000 entries", fmt.Sprintf("%.0f/s", last), ">= 2000/s", last >= 2000)
	record("entry creation, last 1k vs first 1k", fmt.Sprintf("%.2fx (%.0f vs %.0f/s)", last/first, last, first), "flat (>= 0.8x)", last/first >= 0.8)

	full, err := s.Proc.Heap(ctx)
	if err != nil {
		b.Fatal(err)
	}
	record("server heap, 10,000 entries", mb(full), "<= 25 MB (SPIRE 50)", full <= 25<<20)

	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	id, _ := url.Parse("spiffe://" + harness.TrustDomain + "/minted")
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id}}, key)
	svid := svidv1.NewSVIDClient(conn)
	const mints = 2000
	start = time.Now()
	for range mints {
		if _, err := svid.MintX509SVID(ctx, &svidv1.MintX509SVIDRequest{Csr: csr}); err != nil {
			b.Fatal(err)
		}
	}
	rate := mints / time.Since(start).Seconds()
	b.ReportMetric(rate, "mints/s")
	record("MintX509SVID, one client", fmt.Sprintf("%.0f/s", rate), ">= 1500/s", rate >= 1500)
}

// createEntry registers an entry for selector under harness.NodeID, the
// alias of every harness agent, through the admin API.
func createEntry(b *testing.B, conn *grpc.ClientConn, path, selector string) {
	b.Helper()
	e := &types.Entry{
		SpiffeId:  &types.SPIFFEID{TrustDomain: harness.TrustDomain, Path: path},
		ParentId:  &types.SPIFFEID{TrustDomain: harness.TrustDomain, Path: strings.TrimPrefix(harness.NodeID, "spiffe://"+harness.TrustDomain)},
		Selectors: []*types.Selector{{Type: "unix", Value: selector[len("unix:"):]}},
	}
	resp, err := entryv1.NewEntryClient(conn).BatchCreateEntry(context.Background(), &entryv1.BatchCreateEntryRequest{Entries: []*types.Entry{e}})
	if err != nil || resp.Results[0].Status.Code != 0 {
		b.Fatalf("create entry: %v %v", err, resp)
	}
}
