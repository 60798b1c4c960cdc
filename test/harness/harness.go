// Package harness runs the real plinth-server and plinth-agent binaries in
// a private temporary directory, for end-to-end tests and benchmarks: free
// loopback ports, short unix socket paths, readiness by healthcheck, and
// every process stopped (SIGTERM, then SIGKILL) at cleanup. It never touches
// a process it did not start.
package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TrustDomain is the trust domain every harness server serves.
const TrustDomain = "example.org"

// Build compiles plinth-server and plinth-agent into dir and returns dir.
func Build(dir string) error {
	cmd := exec.Command("go", "build", "-o", dir+"/", "github.com/plinth-id/plinth/cmd/plinth-server", "github.com/plinth-id/plinth/cmd/plinth-agent")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v: %s", err, out)
	}
	return nil
}

// Env is one private directory holding a server and its agents.
type Env struct {
	tb  testing.TB
	Bin string
	Dir string

	ServerSock string
	ServerPort int
	Bundle     string // path of the bootstrap bundle, after StartServer
}

// New returns an Env using the binaries in bin.
func New(tb testing.TB, bin string) *Env {
	tb.Helper()
	dir, err := os.MkdirTemp("", "plinth-")
	if err != nil {
		tb.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	tb.Cleanup(func() { os.RemoveAll(dir) })
	return &Env{tb: tb, Bin: bin, Dir: dir, ServerSock: filepath.Join(dir, "s.sock"), ServerPort: FreePort(tb)}
}

// FreePort returns a free loopback TCP port.
func FreePort(tb testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Process is a running binary.
type Process struct {
	Name       string
	Cmd        *exec.Cmd
	HealthPort int
	Started    time.Time

	mu   sync.Mutex
	log  bytes.Buffer
	done chan struct{}
	err  error
}

func (p *Process) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.Write(b)
}

// Log returns what the process printed so far.
func (p *Process) Log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// Done is closed when the process exits.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is the exit error, after Done.
func (p *Process) Err() error { <-p.done; return p.err }

// Stop sends SIGTERM and waits (SIGKILL after 10 s).
func (p *Process) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.Cmd.Process.Kill()
		<-p.done
	}
}

// Heap returns the live heap of the process after a GC, in bytes (its
// health listener's /debug/heap).
func (p *Process) Heap() (uint64, error) {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/heap", p.HealthPort))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var m map[string]uint64
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		return 0, err
	}
	return m["heap_alloc"], nil
}

// Start runs a binary from the Env's bin directory. The process is stopped
// at cleanup and its output logged if the test failed.
func (e *Env) Start(name string, args ...string) *Process {
	e.tb.Helper()
	p := &Process{Name: name, Cmd: exec.Command(filepath.Join(e.Bin, name), args...), done: make(chan struct{})}
	p.Cmd.Dir = e.Dir
	p.Cmd.Stdout, p.Cmd.Stderr = p, p
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p.Started = time.Now()
	if err := p.Cmd.Start(); err != nil {
		e.tb.Fatalf("start %s: %v", name, err)
	}
	go func() { p.err = p.Cmd.Wait(); close(p.done) }()
	e.tb.Cleanup(func() {
		p.Stop()
		if e.tb.Failed() {
			e.tb.Logf("--- %s output ---\n%s", name, p.Log())
		}
	})
	return p
}

// ServerOptions change the server config.
type ServerOptions struct {
	// Extra is added inside the server { } block.
	Extra string
}

// StartServer writes a config, starts plinth-server, waits until it is
// healthy and writes the bootstrap bundle.
func (e *Env) StartServer(o ServerOptions) *Process {
	e.tb.Helper()
	conf := filepath.Join(e.Dir, "server.conf")
	health := FreePort(e.tb)
	data := filepath.Join(e.Dir, "server")
	cfg := fmt.Sprintf(`server {
    bind_address = "127.0.0.1"
    bind_port = "%d"
    socket_path = %q
    trust_domain = %q
    data_dir = %q
    log_level = "DEBUG"
    %s
}
plugins {
    DataStore "sql" { plugin_data { database_type = "sqlite3"  connection_string = %q } }
    KeyManager "disk" { plugin_data { keys_path = %q } }
    NodeAttestor "join_token" { plugin_data {} }
}
health_checks { listener_enabled = true  bind_address = "127.0.0.1"  bind_port = "%d" }
`, e.ServerPort, e.ServerSock, TrustDomain, data, o.Extra, filepath.Join(data, "datastore.sqlite3"), filepath.Join(data, "keys.json"), health)
	if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
		e.tb.Fatal(err)
	}
	p := e.Start("plinth-server", "run", "-config", conf)
	p.HealthPort = health
	e.WaitHealthy(p, "plinth-server", e.ServerSock)
	if e.Bundle == "" {
		e.Bundle = filepath.Join(e.Dir, "bootstrap.crt")
		if err := os.WriteFile(e.Bundle, []byte(e.Admin("bundle", "show")), 0o644); err != nil {
			e.tb.Fatal(err)
		}
	}
	return p
}

// WaitHealthy polls `<bin> healthcheck -socketPath sock` until it succeeds.
func (e *Env) WaitHealthy(p *Process, bin, sock string) {
	e.tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-p.Done():
			e.tb.Fatalf("%s exited before becoming healthy: %v\n%s", bin, p.Err(), p.Log())
		default:
		}
		if exec.Command(filepath.Join(e.Bin, bin), "healthcheck", "-socketPath", sock).Run() == nil {
			return
		}
		if time.Now().After(deadline) {
			e.tb.Fatalf("%s did not become healthy\n%s", bin, p.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Admin runs a plinth-server admin command and returns its output; a
// failure fails the test.
func (e *Env) Admin(args ...string) string {
	e.tb.Helper()
	out, err := e.TryAdmin(args...)
	if err != nil {
		e.tb.Fatalf("plinth-server %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// TryAdmin runs a plinth-server admin command and returns its combined
// output and error.
func (e *Env) TryAdmin(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(e.Bin, "plinth-server"), append(args, "-socketPath", e.ServerSock)...).CombinedOutput()
	return string(out), err
}

// Token generates a join token (with an alias when alias is not empty).
func (e *Env) Token(alias string) string {
	e.tb.Helper()
	args := []string{"token", "generate"}
	if alias != "" {
		args = append(args, "-spiffeID", alias)
	}
	return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(e.Admin(args...)), "Token:"))
}

// Agent describes an agent's directory and socket.
type Agent struct {
	Name       string
	Dir        string
	Sock       string
	Config     string
	HealthPort int
}

// AgentOptions change the agent config.
type AgentOptions struct {
	SyncInterval string // default 5s
}

// NewAgent writes the config of an agent named name (not started).
func (e *Env) NewAgent(name string, o AgentOptions) *Agent {
	e.tb.Helper()
	if o.SyncInterval == "" {
		o.SyncInterval = "5s"
	}
	a := &Agent{Name: name, Dir: filepath.Join(e.Dir, name), Sock: filepath.Join(e.Dir, name+".sock"), Config: filepath.Join(e.Dir, name+".conf")}
	a.HealthPort = FreePort(e.tb)
	cfg := fmt.Sprintf(`agent {
    data_dir = %q
    log_level = "DEBUG"
    server_address = "127.0.0.1"
    server_port = "%d"
    socket_path = %q
    trust_bundle_path = %q
    trust_domain = %q
    sync_interval = %q
}
plugins {
    NodeAttestor "join_token" { plugin_data {} }
    KeyManager "disk" { plugin_data { directory = %q } }
    WorkloadAttestor "unix" { plugin_data { discover_workload_path = true } }
}
health_checks { listener_enabled = true  bind_address = "127.0.0.1"  bind_port = "%d" }
`, a.Dir, e.ServerPort, a.Sock, e.Bundle, TrustDomain, o.SyncInterval, a.Dir, a.HealthPort)
	if err := os.WriteFile(a.Config, []byte(cfg), 0o600); err != nil {
		e.tb.Fatal(err)
	}
	return a
}

// StartAgent starts an agent (with a join token when token is not empty)
// and returns at once; use WaitHealthy to wait for its Workload API.
func (e *Env) StartAgent(a *Agent, token string) *Process {
	e.tb.Helper()
	args := []string{"run", "-config", a.Config}
	if token != "" {
		args = append(args, "-joinToken", token)
	}
	p := e.Start("plinth-agent", args...)
	p.HealthPort = a.HealthPort
	return p
}
