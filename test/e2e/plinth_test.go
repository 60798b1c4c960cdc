package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

const (
	trustDomain = "example.org"
	// nodeID is the alias every test agent's join token registers; workload
	// entries name it as their parent.
	nodeID = "spiffe://example.org/node1"
)

var (
	// testID is this test process's identity; helperID the helper workload's.
	testID   = spiffeid.RequireFromString("spiffe://example.org/test")
	helperID = spiffeid.RequireFromString("spiffe://example.org/helper")
)

// selfSelectors select this test process: its uid and its binary.
func selfSelectors(t *testing.T) []string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return []string{"unix:uid:" + strconv.Itoa(os.Getuid()), "unix:path:" + exe}
}

// helperSelectors select the helper workload binary run by this user.
func helperSelectors() []string {
	return []string{"unix:uid:" + strconv.Itoa(os.Getuid()), "unix:path:" + bin.workload}
}

// server is a plinth-server with its own data dir, admin socket and port.
type server struct {
	dir    string
	socket string
	config string
	port   int
	runs   int
	proc   *proc
}

const serverConfig = `server {
    bind_address = "127.0.0.1"
    bind_port = "%[1]d"
    socket_path = "%[2]s/api.sock"
    trust_domain = "example.org"
    data_dir = "%[2]s/data"
    log_level = "DEBUG"
%[3]s}

plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            connection_string = "%[2]s/data/datastore.sqlite3"
        }
    }
    KeyManager "disk" {
        plugin_data {
            keys_path = "%[2]s/data/keys.json"
        }
    }
    NodeAttestor "join_token" {
        plugin_data {}
    }
}
`

// newServer writes a server's config; extra is added to its server block.
func newServer(t *testing.T, extra string) *server {
	t.Helper()
	dir := shortTempDir(t)
	s := &server{dir: dir, socket: filepath.Join(dir, "api.sock"), config: filepath.Join(dir, "server.conf"), port: freePort(t)}
	writeFile(t, s.config, fmt.Sprintf(serverConfig, s.port, dir, extra))
	return s
}

// startServer starts a new server and waits until it is healthy.
func startServer(t *testing.T) *server {
	t.Helper()
	s := newServer(t, "")
	s.start(t)
	return s
}

// start runs the server (again, with the same config and data) and waits
// until `plinth-server healthcheck` passes.
func (s *server) start(t *testing.T) {
	t.Helper()
	s.runs++
	s.proc = startProc(t, fmt.Sprintf("plinth-server (run %d)", s.runs), bin.server, "run", "-config", s.config)
	waitHealthy(t, s.proc, bin.server, s.socket)
}

// waitHealthy polls `<binary> healthcheck -socketPath socket` until it
// passes, failing early if p exits.
func waitHealthy(t *testing.T, p *proc, binary, socket string) {
	t.Helper()
	start := time.Now()
	err := eventually(15*time.Second, func() error {
		if !p.running() {
			return errStop{fmt.Errorf("%s exited before it was healthy: %v", p.name, p.err)}
		}
		_, stderr, err := runCmd(binary, "healthcheck", "-socketPath", socket)
		if err != nil {
			return fmt.Errorf("%s is not healthy: %v: %s", p.name, err, strings.TrimSpace(stderr))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s healthy after %s", p.name, time.Since(start).Round(time.Millisecond))
}

// cli runs `plinth-server <command> -socketPath S <args>`.
func (s *server) cli(command string, args ...string) (stdout, stderr string, err error) {
	full := append(strings.Fields(command), "-socketPath", s.socket)
	return runCmd(bin.server, append(full, args...)...)
}

// mustCLI runs a CLI command that must succeed and returns its stdout.
func (s *server) mustCLI(t *testing.T, command string, args ...string) string {
	t.Helper()
	stdout, stderr, err := s.cli(command, args...)
	if err != nil {
		t.Fatalf("plinth-server %s %s: %v\n%s", command, strings.Join(args, " "), err, stderr)
	}
	return stdout
}

// cliJSON runs a CLI command with -output json and decodes its output into v.
func (s *server) cliJSON(t *testing.T, v any, command string, args ...string) {
	t.Helper()
	out := s.mustCLI(t, command, append(args, "-output", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("plinth-server %s -output json: %v\n%s", command, err, out)
	}
}

// joinToken generates a join token that also registers nodeID as an alias
// of the agent that redeems it.
func (s *server) joinToken(t *testing.T, ttl int) (token string, expiresAt time.Time) {
	t.Helper()
	var tok struct {
		Value     string `json:"value"`
		ExpiresAt int64  `json:"expires_at,string"`
	}
	s.cliJSON(t, &tok, "token generate", "-spiffeID", nodeID, "-ttl", strconv.Itoa(ttl))
	if tok.Value == "" {
		t.Fatal("token generate printed no token")
	}
	return tok.Value, time.Unix(tok.ExpiresAt, 0)
}

// createEntry registers a workload entry under nodeID and returns its ID.
func (s *server) createEntry(t *testing.T, id spiffeid.ID, selectors ...string) string {
	t.Helper()
	args := []string{"-parentID", nodeID, "-spiffeID", id.String()}
	for _, sel := range selectors {
		args = append(args, "-selector", sel)
	}
	var resp struct {
		Results []struct {
			Status struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			} `json:"status"`
			Entry struct {
				ID string `json:"id"`
			} `json:"entry"`
		} `json:"results"`
	}
	s.cliJSON(t, &resp, "entry create", args...)
	if len(resp.Results) != 1 || resp.Results[0].Status.Code != 0 || resp.Results[0].Entry.ID == "" {
		t.Fatalf("entry create %s: %+v", id, resp)
	}
	return resp.Results[0].Entry.ID
}

func (s *server) entryCount(t *testing.T) int {
	t.Helper()
	var resp struct {
		Count int `json:"count"`
	}
	s.cliJSON(t, &resp, "entry count")
	return resp.Count
}

// agentRecord is one agent of `agent list -output json`.
type agentRecord struct {
	ID struct {
		TrustDomain string `json:"trust_domain"`
		Path        string `json:"path"`
	} `json:"id"`
	AttestationType string `json:"attestation_type"`
	Serial          string `json:"x509svid_serial_number"`
	Banned          bool   `json:"banned"`
}

func (r agentRecord) spiffeID() string { return "spiffe://" + r.ID.TrustDomain + r.ID.Path }

func (s *server) agents(t *testing.T) []agentRecord {
	t.Helper()
	var resp struct {
		Agents []agentRecord `json:"agents"`
	}
	s.cliJSON(t, &resp, "agent list")
	return resp.Agents
}

// bundlePEM returns `plinth-server bundle show`: the X.509 authorities.
func (s *server) bundlePEM(t *testing.T) string {
	t.Helper()
	out := s.mustCLI(t, "bundle show")
	if !strings.Contains(out, "-----BEGIN CERTIFICATE-----") {
		t.Fatalf("bundle show printed no certificate:\n%s", out)
	}
	return out
}

// agent is a plinth-agent of a server, with its own data dir and
// Workload API socket.
type agent struct {
	s       *server
	dataDir string
	socket  string
	config  string
	id      string // its SPIFFE ID, once started with a join token
	runs    int
	proc    *proc
}

const agentConfig = `agent {
    data_dir = "%[1]s/data"
    log_level = "DEBUG"
    server_address = "127.0.0.1"
    server_port = "%[2]d"
    socket_path = "%[1]s/agent.sock"
    trust_bundle_path = "%[1]s/bootstrap.crt"
    trust_domain = "example.org"
    sync_interval = "%[3]s"
}

plugins {
    NodeAttestor "join_token" {
        plugin_data {}
    }
    KeyManager "disk" {
        plugin_data {
            directory = "%[1]s/data"
        }
    }
    WorkloadAttestor "unix" {
        plugin_data {
            discover_workload_path = true
            # No unix:sha256: the test binary is large and hashed per call.
            workload_size_limit = -1
        }
    }
}
`

// newAgent writes an agent's config and bootstrap bundle without starting
// it. syncInterval is its sync_interval, e.g. "5s".
func (s *server) newAgent(t *testing.T, syncInterval string) *agent {
	t.Helper()
	dir := shortTempDir(t)
	a := &agent{s: s, dataDir: filepath.Join(dir, "data"), socket: filepath.Join(dir, "agent.sock"), config: filepath.Join(dir, "agent.conf")}
	if err := os.Mkdir(a.dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "bootstrap.crt"), s.bundlePEM(t))
	writeFile(t, a.config, fmt.Sprintf(agentConfig, dir, s.port, syncInterval))
	return a
}

// startAgent starts a new agent with a new join token and waits until it
// is healthy. The agent attests in the background: wait for an SVID with
// waitSVIDs before relying on it.
func (s *server) startAgent(t *testing.T, syncInterval string) *agent {
	t.Helper()
	a := s.newAgent(t, syncInterval)
	token, _ := s.joinToken(t, 600)
	a.startReady(t, token)
	return a
}

// start runs the agent, with -joinToken unless token is empty, without
// waiting for it.
func (a *agent) start(t *testing.T, token string) *proc {
	t.Helper()
	args := []string{"run", "-config", a.config}
	if token != "" {
		args = append(args, "-joinToken", token)
		a.id = "spiffe://example.org/spire/agent/join_token/" + token
	}
	a.runs++
	a.proc = startProc(t, fmt.Sprintf("plinth-agent (run %d)", a.runs), bin.agent, args...)
	return a.proc
}

// startReady starts the agent and waits until `plinth-agent healthcheck`
// passes.
func (a *agent) startReady(t *testing.T, token string) {
	t.Helper()
	a.start(t, token)
	waitHealthy(t, a.proc, bin.agent, a.socket)
}

// addr is the go-spiffe client option that reaches this agent.
func (a *agent) addr() workloadapi.ClientOption {
	return workloadapi.WithAddr("unix://" + a.socket)
}

// fetchIDs returns the SPIFFE IDs of the X509-SVIDs this process gets from
// the agent, over a new connection, sorted.
func (a *agent) fetchIDs(ctx context.Context) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	svids, err := workloadapi.FetchX509SVIDs(ctx, a.addr())
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, s := range svids {
		ids = append(ids, s.ID.String())
	}
	slices.Sort(ids)
	return ids, nil
}

// waitSVIDs waits until this process gets exactly the X509-SVIDs for want:
// the agent has attested and synced.
func (a *agent) waitSVIDs(t *testing.T, want ...spiffeid.ID) {
	t.Helper()
	var wantIDs []string
	for _, id := range want {
		wantIDs = append(wantIDs, id.String())
	}
	slices.Sort(wantIDs)
	start := time.Now()
	err := eventually(15*time.Second, func() error {
		if !a.proc.running() {
			return errStop{fmt.Errorf("%s exited: %v", a.proc.name, a.proc.err)}
		}
		ids, err := a.fetchIDs(context.Background())
		if err != nil {
			return err
		}
		if !slices.Equal(ids, wantIDs) {
			return fmt.Errorf("got SVIDs %v, want %v", ids, wantIDs)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("waiting for SVIDs from %s: %v", a.proc.name, err)
	}
	t.Logf("%s serves %v after %s", a.proc.name, wantIDs, time.Since(start).Round(time.Millisecond))
}

// startWorkload runs the helper workload against this agent.
func (a *agent) startWorkload(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	return startProc(t, name, bin.workload, append([]string{"-socket", a.socket}, args...)...)
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// clientLog is a go-spiffe logger that keeps what the client logs. The
// client logs an error each time a watch breaks, before it reconnects.
type clientLog struct {
	mu     sync.Mutex
	lines  []string
	errors int
}

func (l *clientLog) add(level, format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, time.Now().Format("15:04:05.000")+" "+level+" "+fmt.Sprintf(format, args...))
	if level == "ERROR" {
		l.errors++
	}
}

func (l *clientLog) Debugf(format string, args ...any) { l.add("DEBUG", format, args...) }
func (l *clientLog) Infof(format string, args ...any)  { l.add("INFO", format, args...) }
func (l *clientLog) Warnf(format string, args ...any)  { l.add("WARN", format, args...) }
func (l *clientLog) Errorf(format string, args ...any) { l.add("ERROR", format, args...) }

func (l *clientLog) errorCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.errors
}

func (l *clientLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// x509Update is one X.509 context a watcher received, and when.
type x509Update struct {
	at  time.Time
	ids []string // sorted
}

// x509Watcher records the updates of one Workload API stream.
type x509Watcher struct {
	log     clientLog
	mu      sync.Mutex
	updates []x509Update
	errs    []error
	changed chan struct{}
}

// watchX509 opens one X.509 watch on the agent for the rest of the test.
func (a *agent) watchX509(t *testing.T) *x509Watcher {
	t.Helper()
	w := &x509Watcher{changed: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	client, err := workloadapi.New(ctx, a.addr(), workloadapi.WithLogger(&w.log))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		client.WatchX509Context(ctx, w)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		client.Close()
		if t.Failed() {
			t.Logf("--- go-spiffe watch client log:\n%s", w.log.String())
		}
	})
	return w
}

func (w *x509Watcher) OnX509ContextUpdate(c *workloadapi.X509Context) {
	u := x509Update{at: time.Now()}
	for _, s := range c.SVIDs {
		u.ids = append(u.ids, s.ID.String())
	}
	slices.Sort(u.ids)
	w.mu.Lock()
	w.updates = append(w.updates, u)
	w.mu.Unlock()
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

func (w *x509Watcher) OnX509ContextWatchError(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.errs = append(w.errs, err)
}

// waitFor returns the first update with exactly the SPIFFE IDs want.
func (w *x509Watcher) waitFor(t *testing.T, timeout time.Duration, want ...spiffeid.ID) x509Update {
	t.Helper()
	var wantIDs []string
	for _, id := range want {
		wantIDs = append(wantIDs, id.String())
	}
	slices.Sort(wantIDs)
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		w.mu.Lock()
		for _, u := range w.updates {
			if slices.Equal(u.ids, wantIDs) {
				w.mu.Unlock()
				return u
			}
		}
		got := slices.Clone(w.updates)
		w.mu.Unlock()
		select {
		case <-w.changed:
		case <-deadline.C:
			t.Fatalf("no X.509 update with %v within %s; updates: %+v", wantIDs, timeout, got)
		}
	}
}
