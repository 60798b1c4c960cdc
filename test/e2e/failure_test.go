package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/plinth-id/plinth/test/harness"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// TestWorkloadAPIRefusals: the Workload API refuses calls without the
// security header, and callers no entry selects.
func TestWorkloadAPIRefusals(t *testing.T) {
	s := harness.StartServer(t, bin.dir)
	s.CreateEntry(t, helperID, helperSelectors()...) // and none for this process
	a := s.StartAgent(t, 5*time.Second)
	// The agent has synced once the helper gets its SVID.
	err := harness.Eventually(15*time.Second, func() error {
		stdout, stderr, err := harness.Exec(bin.workload, "-socket", a.Socket, "-mode", "fetch")
		if got, want := strings.TrimSpace(stdout), "svid "+helperID.String(); err != nil || got != want {
			return fmt.Errorf("helper fetch: %v: %q %q, want %q", err, got, strings.TrimSpace(stderr), want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	t.Run("NoSecurityHeader", func(t *testing.T) {
		conn, err := grpc.NewClient("unix://"+a.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		client := workload.NewSpiffeWorkloadAPIClient(conn)
		calls := []struct {
			name string
			call func(context.Context) error
		}{
			{"FetchX509SVID", func(ctx context.Context) error {
				stream, err := client.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
				if err == nil {
					_, err = stream.Recv()
				}
				return err
			}},
			{"FetchX509Bundles", func(ctx context.Context) error {
				stream, err := client.FetchX509Bundles(ctx, &workload.X509BundlesRequest{})
				if err == nil {
					_, err = stream.Recv()
				}
				return err
			}},
			{"FetchJWTSVID", func(ctx context.Context) error {
				_, err := client.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"aud"}})
				return err
			}},
			{"FetchJWTBundles", func(ctx context.Context) error {
				stream, err := client.FetchJWTBundles(ctx, &workload.JWTBundlesRequest{})
				if err == nil {
					_, err = stream.Recv()
				}
				return err
			}},
			{"ValidateJWTSVID", func(ctx context.Context) error {
				_, err := client.ValidateJWTSVID(ctx, &workload.ValidateJWTSVIDRequest{Audience: "aud", Svid: "not-a-jwt"})
				return err
			}},
		}
		for _, c := range calls {
			t.Run(c.name, func(t *testing.T) {
				wantStatus(t, c.call(ctx), codes.InvalidArgument, "security header missing from request")
			})
		}
		// The same client with the header gets past the check (and, with
		// no entry for this process, no identity).
		withHeader := metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
		wantStatus(t, calls[0].call(withHeader), codes.PermissionDenied, "no identity issued")
	})

	t.Run("UnregisteredCaller", func(t *testing.T) {
		_, err := workloadapi.FetchX509SVID(ctx, a.Addr())
		wantStatus(t, err, codes.PermissionDenied, "no identity issued")
		_, err = workloadapi.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "aud"}, a.Addr())
		wantStatus(t, err, codes.PermissionDenied, "no identity issued")
		_, err = workloadapi.FetchX509Bundles(ctx, a.Addr())
		wantStatus(t, err, codes.PermissionDenied, "no identity issued")
		_, err = workloadapi.FetchJWTBundles(ctx, a.Addr())
		wantStatus(t, err, codes.PermissionDenied, "no identity issued")
	})
}

// TestEntryCreateInvalid: entry create refuses malformed entries with a
// clear message and creates nothing.
func TestEntryCreateInvalid(t *testing.T) {
	s := harness.StartServer(t, bin.dir)
	valid := func(extra ...string) []string {
		return append([]string{"-parentID", harness.NodeID, "-spiffeID", "spiffe://example.org/wl", "-selector", "unix:uid:0"}, extra...)
	}
	tests := []struct {
		name string
		args []string
		want string // all of stderr
	}{{
		name: "SPIFFE ID without scheme",
		args: []string{"-parentID", harness.NodeID, "-spiffeID", "example.org/wl", "-selector", "unix:uid:0"},
		want: `Error: invalid -spiffeID "example.org/wl": scheme is missing or invalid`,
	}, {
		name: "SPIFFE ID of another trust domain",
		args: []string{"-parentID", harness.NodeID, "-spiffeID", "spiffe://other.org/wl", "-selector", "unix:uid:0"},
		want: `Error: failed to create the following entry (code: InvalidArgument, msg: "failed to convert entry: invalid spiffe_id: \"spiffe://other.org/wl\" is not a member of trust domain \"example.org\""): spiffe://other.org/wl`,
	}, {
		name: "invalid parent ID",
		args: []string{"-parentID", "spiffe://example.org/a b", "-spiffeID", "spiffe://example.org/wl", "-selector", "unix:uid:0"},
		want: `Error: invalid -parentID "spiffe://example.org/a b": path segment characters are limited to letters, numbers, dots, dashes, and underscores`,
	}, {
		name: "selector without value",
		args: []string{"-parentID", harness.NodeID, "-spiffeID", "spiffe://example.org/wl", "-selector", "unix"},
		want: `Error: invalid -selector "unix": want type:value (e.g. unix:uid:1000)`,
	}, {
		name: "no selector",
		args: []string{"-parentID", harness.NodeID, "-spiffeID", "spiffe://example.org/wl"},
		want: `Error: at least one -selector is required`,
	}, {
		name: "negative X509-SVID TTL",
		args: valid("-x509SVIDTTL=-5"),
		want: `Error: TTLs may not be negative`,
	}, {
		name: "negative JWT-SVID TTL",
		args: valid("-jwtSVIDTTL=-1"),
		want: `Error: TTLs may not be negative`,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := s.EntryCount(t)
			stdout, stderr, err := s.CLI("entry create", tt.args...)
			if err == nil {
				t.Errorf("entry create succeeded:\n%s", stdout)
			}
			if got := strings.TrimSpace(stderr); got != tt.want {
				t.Errorf("stderr:\n%s\nwant:\n%s", got, tt.want)
			}
			if after := s.EntryCount(t); after != before {
				t.Errorf("entry count %d after a refused create, was %d", after, before)
			}
		})
	}
	// The count does count: a valid entry adds one.
	before := s.EntryCount(t)
	s.CreateEntry(t, testID, "unix:uid:0")
	if after := s.EntryCount(t); after != before+1 {
		t.Errorf("entry count %d after a valid create, was %d", after, before)
	}
}

// TestJoinTokenReuse: a join token attests one agent; a second agent with
// the same token fails to start and says why.
func TestJoinTokenReuse(t *testing.T) {
	s := harness.StartServer(t, bin.dir)
	token, _ := s.JoinToken(t, 10*time.Minute)
	first := s.NewAgent(t, 5*time.Second)
	first.StartReady(t, token)
	waitAgents(t, s, 1)

	second := s.NewAgent(t, 5*time.Second)
	p := second.Start(t, token)
	wantAgentExit(t, p, "Error: agent: node attestation with join_token failed: ", "join token does not exist or has already been used")
	if got := s.Agents(t); len(got) != 1 || got[0].SPIFFEID() != first.ID {
		t.Errorf("agents: %+v, want only the first agent %s", got, first.ID)
	}
}

// TestJoinTokenExpired: an agent presenting an expired token fails to start.
func TestJoinTokenExpired(t *testing.T) {
	s := harness.StartServer(t, bin.dir)
	token, expires := s.JoinToken(t, time.Second)
	a := s.NewAgent(t, 5*time.Second)
	<-time.After(time.Until(expires)) // expired at or before now, per the server
	p := a.Start(t, token)
	wantAgentExit(t, p, "Error: agent: node attestation with join_token failed: ", "join token expired")
	if got := s.Agents(t); len(got) != 0 {
		t.Errorf("agents: %+v, want none", got)
	}
}

// TestAgentBanned: a banned agent is refused at its next sync, deletes its
// SVID (so a restart cannot reuse it) and exits saying it is banned.
func TestAgentBanned(t *testing.T) {
	s := harness.StartServer(t, bin.dir)
	s.CreateEntry(t, testID, selfSelectors(t)...)
	a := s.StartAgent(t, time.Second)
	a.WaitSVIDs(t, testID)

	s.MustCLI(t, "agent ban", "-spiffeID", a.ID)
	start := time.Now()
	wantAgentExit(t, a.Proc, "Error: ", a.ID, "banned")
	t.Logf("agent exited %s after the ban", time.Since(start).Round(time.Millisecond))
	if _, err := os.Stat(filepath.Join(a.DataDir, "agent-svid.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("banned agent's agent-svid.json: %v, want it deleted", err)
	}
	if got := s.Agents(t); len(got) != 1 || !got[0].Banned {
		t.Errorf("agents: %+v, want the one agent, banned", got)
	}
}

// TestAgentEvicted: an evicted agent is refused at its next sync and, as
// SPIRE agents do, attests again; its join token is spent, so it exits
// saying so.
func TestAgentEvicted(t *testing.T) {
	s := harness.StartServer(t, bin.dir)
	s.CreateEntry(t, testID, selfSelectors(t)...)
	a := s.StartAgent(t, time.Second)
	a.WaitSVIDs(t, testID)

	s.MustCLI(t, "agent evict", "-spiffeID", a.ID)
	start := time.Now()
	wantAgentExit(t, a.Proc, "Error: agent: node attestation with join_token failed: ", "join token does not exist or has already been used")
	t.Logf("agent exited %s after the eviction", time.Since(start).Round(time.Millisecond))
	if got := s.Agents(t); len(got) != 0 {
		t.Errorf("agents: %+v, want none", got)
	}
}

// TestAgentCorruptDataDir: an agent whose saved SVID is garbage refuses to
// start and names the file.
func TestAgentCorruptDataDir(t *testing.T) {
	s := harness.StartServer(t, bin.dir)
	a := s.NewAgent(t, 5*time.Second)
	path := filepath.Join(a.DataDir, "agent-svid.json")
	if err := os.WriteFile(path, []byte("garbage{"), 0o600); err != nil {
		t.Fatal(err)
	}
	token, _ := s.JoinToken(t, 10*time.Minute)
	p := a.Start(t, token)
	wantAgentExit(t, p, "Error: agent: agent data "+path+" is corrupt (not valid JSON: ")
	if got := s.Agents(t); len(got) != 0 {
		t.Errorf("agents: %+v, want none (the token must stay unused)", got)
	}
}

// TestServerMalformedConfig: plinth-server run refuses a config with an
// unknown key and names its file and line.
func TestServerMalformedConfig(t *testing.T) {
	s := harness.NewServer(t, bin.dir, "    bogus_key = \"x\"\n")
	data, err := os.ReadFile(s.Config)
	if err != nil {
		t.Fatal(err)
	}
	line := 0
	for i, l := range strings.Split(string(data), "\n") {
		if strings.Contains(l, "bogus_key") {
			line = i + 1
		}
	}
	p := s.Start(t)
	if code := p.WaitExit(t, 10*time.Second); code == 0 {
		t.Fatal("plinth-server run exited 0 with an unknown key in its config")
	}
	want := fmt.Sprintf(`Error: %s:%d: unknown key "bogus_key" in server block`, s.Config, line)
	if got := errorLine(p.Output()); got != want {
		t.Errorf("error line:\n%s\nwant:\n%s", got, want)
	}
}

// waitAgents waits until the server lists n agents.
func waitAgents(t *testing.T, s *harness.Server, n int) {
	t.Helper()
	err := harness.Eventually(15*time.Second, func() error {
		if got := s.Agents(t); len(got) != n {
			return fmt.Errorf("%d agents, want %d", len(got), n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// wantAgentExit waits for an agent to exit on its own with a non-zero
// status, its "Error:" line starting with prefix and containing each of
// contains.
func wantAgentExit(t *testing.T, p *harness.Process, prefix string, contains ...string) {
	t.Helper()
	code := p.WaitExit(t, 20*time.Second)
	line := errorLine(p.Output())
	t.Logf("%s exited with status %d: %s", p.Name, code, line)
	if code == 0 {
		t.Errorf("%s exited with status 0, want non-zero", p.Name)
	}
	if !strings.HasPrefix(line, prefix) {
		t.Errorf("%s error line:\n%s\nwant it to start with:\n%s", p.Name, line, prefix)
	}
	for _, c := range contains {
		if !strings.Contains(line, c) {
			t.Errorf("%s error line:\n%s\nwant it to contain %q", p.Name, line, c)
		}
	}
}

// An agent started before its server keeps trying and attests once the
// server is up.
func TestAgentStartsBeforeServer(t *testing.T) {
	s := harness.StartServer(t, bin.dir)
	a := s.NewAgent(t, time.Second)
	token, _ := s.JoinToken(t, 10*time.Minute)
	s.Proc.MustStop(t)
	p := a.Start(t, token)
	if err := harness.Eventually(10*time.Second, func() error {
		if !strings.Contains(p.Output(), "cannot reach the server to attest; retrying") {
			return fmt.Errorf("no retry yet")
		}
		return nil
	}); err != nil {
		t.Fatalf("%v\n%s", err, p.Output())
	}
	s.StartReady(t)
	s.CreateEntry(t, testID, selfSelectors(t)...)
	a.WaitSVIDs(t, testID)
}
