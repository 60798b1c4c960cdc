package e2e

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/plinth-id/plinth/test/harness"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestHappyPath: one server, one agent, two workloads with their own
// identities: X509-SVID, JWT-SVID, and mTLS between the workloads.
func TestHappyPath(t *testing.T) {
	s := harness.StartServer(t, bin.dir)
	s.CreateEntry(t, testID, selfSelectors(t)...)
	s.CreateEntry(t, helperID, helperSelectors()...)
	a := s.StartAgent(t, 5*time.Second)
	a.WaitSVIDs(t, testID)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	source, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(a.Addr()))
	if err != nil {
		t.Fatalf("NewX509Source: %v", err)
	}
	defer source.Close()

	t.Run("X509SVID", func(t *testing.T) {
		svid, err := source.GetX509SVID()
		if err != nil {
			t.Fatal(err)
		}
		if svid.ID != testID {
			t.Errorf("X509-SVID ID = %s, want %s", svid.ID, testID)
		}
		id, _, err := x509svid.Verify(svid.Certificates, source)
		if err != nil {
			t.Fatalf("the Workload API bundle does not verify the X509-SVID: %v", err)
		}
		if id != testID {
			t.Errorf("verified ID = %s, want %s", id, testID)
		}
		// The agent hands out the bundle the server shows.
		b, err := source.GetX509BundleForTrustDomain(testID.TrustDomain())
		if err != nil {
			t.Fatal(err)
		}
		if got, want := fingerprints(b.X509Authorities()), fingerprints(parsePEM(t, s.BundlePEM(t))); !slices.Equal(got, want) {
			t.Errorf("Workload API bundle %v, server bundle %v", got, want)
		}
	})

	t.Run("JWTSVID", func(t *testing.T) {
		svid, err := workloadapi.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "aud-a"}, a.Addr())
		if err != nil {
			t.Fatalf("FetchJWTSVID: %v", err)
		}
		if svid.ID != testID {
			t.Errorf("JWT-SVID ID = %s, want %s", svid.ID, testID)
		}
		token := svid.Marshal()
		got, err := workloadapi.ValidateJWTSVID(ctx, token, "aud-a", a.Addr())
		if err != nil {
			t.Fatalf("ValidateJWTSVID(aud-a): %v", err)
		}
		if got.ID != testID {
			t.Errorf("validated ID = %s, want %s", got.ID, testID)
		}
		// Also locally, against the JWT bundle the agent publishes.
		bundles, err := workloadapi.FetchJWTBundles(ctx, a.Addr())
		if err != nil {
			t.Fatalf("FetchJWTBundles: %v", err)
		}
		if _, err := jwtsvid.ParseAndValidate(token, bundles, []string{"aud-a"}); err != nil {
			t.Errorf("JWT-SVID does not validate against the JWT bundle: %v", err)
		}

		_, err = workloadapi.ValidateJWTSVID(ctx, token, "aud-b", a.Addr())
		wantStatus(t, err, codes.InvalidArgument, `jwtsvid: expected audience in ["aud-b"] (audience=["aud-a"])`)
	})

	t.Run("MTLS", func(t *testing.T) {
		// The helper admits only this process; this process admits only
		// the helper.
		h := startWorkload(t, a, "workload serve", "-mode", "serve", "-peer", testID.String())
		if got := h.WaitOutput(t, "svid ", 15*time.Second); got != helperID.String() {
			t.Fatalf("helper workload got SVID %s, want %s", got, helperID)
		}
		addr := h.WaitOutput(t, "listening ", 5*time.Second)

		reply, peer, err := exchange(ctx, addr, source, helperID, "ping")
		if err != nil {
			t.Fatalf("mTLS exchange with the helper: %v", err)
		}
		if peer != helperID {
			t.Errorf("peer ID = %s, want %s", peer, helperID)
		}
		if want := "hello ping from " + helperID.String(); reply != want {
			t.Errorf("reply %q, want %q", reply, want)
		}
		if got := h.WaitOutput(t, "accepted ", 5*time.Second); got != testID.String() {
			t.Errorf("helper accepted %s, want %s", got, testID)
		}

		// This process expects another ID: its handshake fails.
		wrong := spiffeid.RequireFromString("spiffe://example.org/not-the-helper")
		_, _, err = exchange(ctx, addr, source, wrong, "ping")
		if want := fmt.Sprintf("unexpected ID %q", helperID); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("dial expecting %s: err = %v, want it to contain %q", wrong, err, want)
		}

		// The helper expects another ID: it refuses this process.
		h2 := startWorkload(t, a, "workload serve (wrong peer)", "-mode", "serve", "-peer", wrong.String())
		addr2 := h2.WaitOutput(t, "listening ", 15*time.Second)
		if _, _, err := exchange(ctx, addr2, source, helperID, "ping"); err == nil {
			t.Error("exchange with a helper that expects another ID succeeded")
		}
		if got, want := h2.WaitOutput(t, "refused ", 5*time.Second), fmt.Sprintf("unexpected ID %q", testID); !strings.Contains(got, want) {
			t.Errorf("helper refused with %q, want it to contain %q", got, want)
		}
	})
}

// exchange dials addr over mTLS with this process's SVID, admitting only
// peer, sends msg and returns the one-line reply.
func exchange(ctx context.Context, addr string, source *workloadapi.X509Source, peer spiffeid.ID, msg string) (reply string, peerID spiffeid.ID, err error) {
	conn, err := spiffetls.DialWithMode(ctx, "tcp", addr, spiffetls.MTLSClientWithSource(tlsconfig.AuthorizeID(peer), source))
	if err != nil {
		return "", spiffeid.ID{}, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if peerID, err = spiffetls.PeerIDFromConn(conn); err != nil {
		return "", spiffeid.ID{}, err
	}
	if _, err := fmt.Fprintln(conn, msg); err != nil {
		return "", peerID, err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return "", peerID, err
	}
	return strings.TrimSuffix(line, "\n"), peerID, nil
}

// TestPushNewEntry: a new entry reaches connected workloads through their
// open streams, pushed by the server's change notification, not by polling.
// The agent's sync_interval is 30 s so that only a push can be this fast.
func TestPushNewEntry(t *testing.T) {
	s := harness.StartServer(t, bin.dir)
	s.CreateEntry(t, testID, selfSelectors(t)...)
	a := s.StartAgent(t, 30*time.Second)
	a.WaitSVIDs(t, testID)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	second := spiffeid.RequireFromString("spiffe://example.org/test-second")

	// An X509Source that prefers the second identity once it exists, and a
	// watcher that records every update with its arrival time.
	var sourceLog clientLog
	source, err := workloadapi.NewX509Source(ctx,
		workloadapi.WithClientOptions(a.Addr(), workloadapi.WithLogger(&sourceLog)),
		workloadapi.WithDefaultX509SVIDPicker(func(svids []*x509svid.SVID) *x509svid.SVID {
			for _, s := range svids {
				if s.ID == second {
					return s
				}
			}
			return svids[0]
		}))
	if err != nil {
		t.Fatalf("NewX509Source: %v", err)
	}
	defer source.Close()
	w := watchX509(t, a)
	w.waitFor(t, 10*time.Second, testID)

	start := time.Now()
	s.CreateEntry(t, second, selfSelectors(t)...)
	u := w.waitFor(t, 10*time.Second, testID, second)
	latency := u.at.Sub(start)
	t.Logf("new entry's X509-SVID pushed to the open stream %s after entry create started", latency.Round(time.Millisecond))
	if latency > 3*time.Second {
		t.Errorf("push took %s, want < 3s", latency)
	}
	err = harness.Eventually(3*time.Second, func() error {
		svid, err := source.GetX509SVID()
		if err != nil {
			return err
		}
		if svid.ID != second {
			return fmt.Errorf("X509Source serves %s, want %s", svid.ID, second)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}

	// Both clients kept their first stream: go-spiffe logs an error each
	// time a stream breaks, before it reconnects.
	if n := w.log.errorCount(); n > 0 {
		t.Errorf("the watch stream broke %d time(s); want one uninterrupted stream:\n%s", n, w.log.String())
	}
	if n := sourceLog.errorCount(); n > 0 {
		t.Errorf("the X509Source stream broke %d time(s); want one uninterrupted stream:\n%s", n, sourceLog.String())
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.errs) > 0 {
		t.Errorf("watch errors: %v", w.errs)
	}
}

// TestAgentRestart: a restarted agent resumes with the SVID in its data dir
// (no join token, no new attestation) and serves SVIDs again.
func TestAgentRestart(t *testing.T) {
	s := harness.StartServer(t, bin.dir)
	s.CreateEntry(t, testID, selfSelectors(t)...)
	a := s.StartAgent(t, 5*time.Second)
	a.WaitSVIDs(t, testID)
	before := s.Agents(t)
	if len(before) != 1 || before[0].SPIFFEID() != a.ID || before[0].Serial == "" {
		t.Fatalf("agents before restart: %+v, want only %s", before, a.ID)
	}

	a.Proc.MustStop(t)
	a.StartReady(t, "") // no join token: a new attestation would fail
	a.WaitSVIDs(t, testID)

	after := s.Agents(t)
	if len(after) != 1 {
		t.Fatalf("agents after restart: %+v, want one", after)
	}
	if after[0].SPIFFEID() != a.ID || after[0].Serial != before[0].Serial {
		t.Errorf("agent after restart: %s serial %s, want %s serial %s (no re-attestation)",
			after[0].SPIFFEID(), after[0].Serial, a.ID, before[0].Serial)
	}
}

// TestServerRestart: entries, agents and the CA survive a server restart;
// the agent serves cached SVIDs during the outage and reconnects after.
func TestServerRestart(t *testing.T) {
	s := harness.StartServer(t, bin.dir)
	s.CreateEntry(t, testID, selfSelectors(t)...)
	s.CreateEntry(t, helperID, helperSelectors()...)
	a := s.StartAgent(t, time.Second)
	a.WaitSVIDs(t, testID)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	jwtBefore, err := workloadapi.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "outage"}, a.Addr())
	if err != nil {
		t.Fatalf("FetchJWTSVID: %v", err)
	}

	entries := canonicalJSON(t, s.MustCLI(t, "entry show", "-output", "json"))
	agents := canonicalJSON(t, s.MustCLI(t, "agent list", "-output", "json"))
	bundle := s.BundlePEM(t)

	s.Proc.MustStop(t)

	// Outage: at least two sync intervals, every fetch on a new connection.
	outage := time.Now()
	for time.Since(outage) < 2500*time.Millisecond {
		ids, err := a.FetchIDs(ctx)
		if err != nil || !slices.Equal(ids, []string{testID.String()}) {
			t.Fatalf("X509-SVIDs %.1fs into the server outage: %v, %v; want [%s]", time.Since(outage).Seconds(), ids, err, testID)
		}
		<-time.After(250 * time.Millisecond)
	}
	jwt, err := workloadapi.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "outage"}, a.Addr())
	if err != nil {
		t.Errorf("FetchJWTSVID during the outage (cached audience): %v", err)
	} else if jwt.Marshal() != jwtBefore.Marshal() {
		t.Errorf("JWT-SVID during the outage is not the cached one")
	}
	if _, err := workloadapi.ValidateJWTSVID(ctx, jwtBefore.Marshal(), "outage", a.Addr()); err != nil {
		t.Errorf("ValidateJWTSVID during the outage: %v", err)
	}
	if !a.Proc.Running() {
		t.Fatalf("agent exited during the server outage: %v", a.Proc.Err())
	}

	s.StartReady(t)
	if got := canonicalJSON(t, s.MustCLI(t, "entry show", "-output", "json")); got != entries {
		t.Errorf("entries changed across the restart:\nbefore %s\nafter  %s", entries, got)
	}
	if got := canonicalJSON(t, s.MustCLI(t, "agent list", "-output", "json")); got != agents {
		t.Errorf("agents changed across the restart:\nbefore %s\nafter  %s", agents, got)
	}
	if got := s.BundlePEM(t); got != bundle {
		t.Errorf("bundle changed across the restart:\nbefore\n%s\nafter\n%s", bundle, got)
	}

	// The agent is back in step: a new entry reaches the workload.
	third := spiffeid.RequireFromString("spiffe://example.org/test-after-restart")
	s.CreateEntry(t, third, selfSelectors(t)...)
	a.WaitSVIDs(t, testID, third)
	if got := s.Agents(t); len(got) != 1 || got[0].SPIFFEID() != a.ID {
		t.Errorf("agents after reconnecting: %+v, want only %s (no re-attestation)", got, a.ID)
	}
}

// canonicalJSON re-encodes a JSON document with sorted keys and, for
// arrays of objects with an "id", sorted elements, so equal content
// compares equal whatever the listing order.
func canonicalJSON(t *testing.T, s string) string {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("%v\n%s", err, s)
	}
	var sortArrays func(any)
	sortArrays = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for _, e := range v {
				sortArrays(e)
			}
		case []any:
			for _, e := range v {
				sortArrays(e)
			}
			keys := make([]string, len(v))
			for i, e := range v {
				m, ok := e.(map[string]any)
				if !ok || m["id"] == nil {
					return
				}
				k, _ := json.Marshal(m["id"])
				keys[i] = string(k)
			}
			idx := make([]int, len(v))
			for i := range idx {
				idx[i] = i
			}
			slices.SortFunc(idx, func(a, b int) int { return strings.Compare(keys[a], keys[b]) })
			sorted := make([]any, len(v))
			for i, j := range idx {
				sorted[i] = v[j]
			}
			copy(v, sorted)
		}
	}
	sortArrays(v)
	out, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// wantStatus checks that err is a gRPC status with code and message.
func wantStatus(t *testing.T, err error, code codes.Code, msg string) {
	t.Helper()
	st, ok := status.FromError(err)
	switch {
	case err == nil:
		t.Errorf("err = nil, want %s %q", code, msg)
	case !ok:
		t.Errorf("err = %v, want status %s %q", err, code, msg)
	case st.Code() != code || st.Message() != msg:
		t.Errorf("status = %s %q, want %s %q", st.Code(), st.Message(), code, msg)
	}
}

func parsePEM(t *testing.T, s string) []*x509.Certificate {
	t.Helper()
	var certs []*x509.Certificate
	rest := []byte(s)
	for {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			return certs
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
}

// fingerprints returns the SHA-256 of each certificate, sorted.
func fingerprints(certs []*x509.Certificate) []string {
	var out []string
	for _, c := range certs {
		out = append(out, fmt.Sprintf("%x", sha256.Sum256(c.Raw)))
	}
	slices.Sort(out)
	return out
}
