package e2e

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plinth-id/plinth/test/harness"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// TestForcedRotation: an operator forces prepare -> activate -> taint ->
// revoke of the X.509 authority while two workloads keep opening mTLS
// connections to each other; not one handshake may fail. After the taint,
// every SVID (the agent's own included) is replaced by the new authority
// well within one sync interval; after the revoke the old authority is gone
// from the bundle the workloads hold.
func TestForcedRotation(t *testing.T) {
	s := harness.StartServer(t, bin.dir)
	a := s.StartAgent(t, 5*time.Second)
	clientID := spiffeid.RequireFromString("spiffe://example.org/rot-client")
	serverID := spiffeid.RequireFromString("spiffe://example.org/rot-server")
	s.CreateEntry(t, clientID, selfSelectors(t)...)
	s.CreateEntry(t, serverID, selfSelectors(t)...)
	a.WaitSVIDs(t, clientID, serverID)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	source := func(id spiffeid.ID) *workloadapi.X509Source {
		src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(a.Addr()),
			workloadapi.WithDefaultX509SVIDPicker(func(svids []*x509svid.SVID) *x509svid.SVID {
				for _, s := range svids {
					if s.ID == id {
						return s
					}
				}
				return svids[0]
			}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { src.Close() })
		return src
	}
	clientSrc, serverSrc := source(clientID), source(serverID)

	l, err := spiffetls.ListenWithMode(ctx, "tcp", "127.0.0.1:0", spiffetls.MTLSServerWithSource(tlsconfig.AuthorizeID(clientID), serverSrc))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				line, err := bufio.NewReader(conn).ReadString('\n')
				if err == nil {
					fmt.Fprint(conn, line)
				}
			}()
		}
	}()

	// The client loop: one mTLS exchange every 10 ms until told to stop.
	var ok, failed atomic.Int64
	var failures sync.Map
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			if err := roundTrip(ctx, l.Addr(), clientSrc, serverID, i); err != nil {
				failed.Add(1)
				failures.Store(err.Error(), true)
			} else {
				ok.Add(1)
			}
		}
	}()
	defer func() { close(stop); l.Close(); wg.Wait() }()

	type authorities struct {
		Authorities []struct {
			ID      string `json:"authority_id"`
			Status  string `json:"status"`
			Tainted bool   `json:"tainted"`
		} `json:"authorities"`
	}
	show := func() authorities {
		var v authorities
		s.CLIJSON(t, &v, "localauthority x509 show")
		return v
	}
	before := show()
	if len(before.Authorities) != 1 {
		t.Fatalf("authorities before rotation: %+v", before)
	}
	oldID := before.Authorities[0].ID
	issuer := func(src *workloadapi.X509Source) string {
		svid, err := src.GetX509SVID()
		if err != nil {
			return ""
		}
		return hex.EncodeToString(svid.Certificates[0].AuthorityKeyId)
	}
	waitExchanges := func(n int64) {
		t.Helper()
		target := ok.Load() + n
		if err := harness.Eventually(10*time.Second, func() error {
			if ok.Load() < target {
				return fmt.Errorf("only %d exchanges", ok.Load())
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	waitExchanges(5)

	s.MustCLI(t, "localauthority x509 prepare")
	after := show()
	newID := ""
	for _, au := range after.Authorities {
		if au.Status == "prepared" {
			newID = au.ID
		}
	}
	if newID == "" {
		t.Fatalf("no prepared authority: %+v", after)
	}
	waitExchanges(5)
	s.MustCLI(t, "localauthority x509 activate", "-authorityID", newID)
	waitExchanges(5)

	start := time.Now()
	s.MustCLI(t, "localauthority x509 taint", "-authorityID", oldID)
	// Every SVID moves to the new authority within one sync interval (5 s),
	// pushed by the server, not at half life (30 min away).
	if err := harness.Eventually(5*time.Second, func() error {
		if issuer(clientSrc) != newID || issuer(serverSrc) != newID {
			return fmt.Errorf("workload SVIDs still signed by %s / %s", issuer(clientSrc), issuer(serverSrc))
		}
		if !strings.Contains(a.Proc.Output(), "agent SVID renewed") {
			return fmt.Errorf("the agent SVID was not renewed")
		}
		return nil
	}); err != nil {
		t.Fatalf("after the taint: %v", err)
	}
	t.Logf("SVIDs replaced %v after the taint", time.Since(start).Round(time.Millisecond))
	waitExchanges(5)

	s.MustCLI(t, "localauthority x509 revoke", "-authorityID", oldID)
	if err := harness.Eventually(5*time.Second, func() error {
		b, err := clientSrc.GetX509BundleForTrustDomain(spiffeid.RequireTrustDomainFromString("example.org"))
		if err != nil {
			return err
		}
		for _, c := range b.X509Authorities() {
			if hex.EncodeToString(c.SubjectKeyId) == oldID {
				return fmt.Errorf("the revoked authority is still in the workload's bundle")
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	waitExchanges(10)
	// The revoked authority is gone from the server's bundle too.
	if pem := s.BundlePEM(t); strings.Count(pem, "BEGIN CERTIFICATE") != 1 {
		t.Fatalf("bundle after the revoke has %d certificates, want 1", strings.Count(pem, "BEGIN CERTIFICATE"))
	}
	if n := failed.Load(); n != 0 {
		var msgs []string
		failures.Range(func(k, _ any) bool { msgs = append(msgs, k.(string)); return true })
		t.Fatalf("%d of %d handshakes failed during the rotation: %v", n, n+ok.Load(), msgs)
	}
	t.Logf("%d mTLS exchanges during the rotation, none failed", ok.Load())
}

func roundTrip(ctx context.Context, addr net.Addr, src *workloadapi.X509Source, peer spiffeid.ID, i int) error {
	_, _, err := exchange(ctx, addr.String(), src, peer, fmt.Sprint("ping ", i))
	return err
}
