package harness

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

const (
	// TrustDomain is the trust domain every harness server serves.
	TrustDomain = "example.org"
	// NodeID is the alias every harness join token registers for the agent
	// that redeems it; CreateEntry names it as the parent of each entry.
	NodeID = "spiffe://" + TrustDomain + "/node"
)

// Server is a plinth-server with its own directory, data, admin socket and
// ports. Its configuration is written once, by NewServer; every Start runs
// it again on the same configuration and data.
type Server struct {
	Dir        string   // its private directory: configuration, data, socket
	Config     string   // path of its configuration file
	Socket     string   // its admin API socket
	Port       int      // its agent API port on 127.0.0.1
	HealthPort int      // its health_checks listener's port on 127.0.0.1
	Proc       *Process // the current run, once started

	bin  string // directory of the binaries
	runs int
}

const serverConfig = `server {
    bind_address = "127.0.0.1"
    bind_port = "%[1]d"
    socket_path = "%[2]s/api.sock"
    trust_domain = "` + TrustDomain + `"
    data_dir = "%[2]s/data"
    log_level = "DEBUG"
%[4]s}

plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            connection_string = "%[2]s/data/datastore.sqlite3"
        }
    }
%[6]s    NodeAttestor "join_token" {
        plugin_data {}
    }
%[5]s}

health_checks {
    listener_enabled = true
    bind_address = "127.0.0.1"
    bind_port = "%[3]d"
}
`

// NewServer writes the configuration of a server that runs the
// plinth-server binary in the directory bin, without starting it. extra
// is added at the end of the server block.
func NewServer(tb testing.TB, bin, extra string) *Server {
	tb.Helper()
	return NewServerWithPlugins(tb, bin, extra, "")
}

// keyManager is the default KeyManager "disk" block, unless plugins names
// another KeyManager.
func keyManager(plugins, dir string) string {
	if strings.Contains(plugins, "KeyManager ") {
		return ""
	}
	return fmt.Sprintf(`    KeyManager "disk" {
        plugin_data {
            keys_path = "%s/data/keys.json"
        }
    }
`, dir)
}

// NewServerWithPlugins is NewServer with plugins added to the plugins
// block (such as NodeAttestor "tpm").
func NewServerWithPlugins(tb testing.TB, bin, extra, plugins string) *Server {
	tb.Helper()
	dir := tempDir(tb)
	s := &Server{
		Dir:        dir,
		Config:     filepath.Join(dir, "server.conf"),
		Socket:     filepath.Join(dir, "api.sock"),
		Port:       freePort(tb),
		HealthPort: freePort(tb),
		bin:        bin,
	}
	writeFile(tb, s.Config, fmt.Sprintf(serverConfig, s.Port, dir, s.HealthPort, extra, plugins, keyManager(plugins, dir)))
	return s
}

// StartServer starts a new server from the binaries in bin and waits until
// it is healthy.
func StartServer(tb testing.TB, bin string) *Server {
	tb.Helper()
	s := NewServer(tb, bin, "")
	s.StartReady(tb)
	return s
}

// Start runs the server (again) without waiting for it.
func (s *Server) Start(tb testing.TB) *Process {
	tb.Helper()
	s.runs++
	s.Proc = Start(tb, fmt.Sprintf("plinth-server (run %d)", s.runs), filepath.Join(s.bin, "plinth-server"), "run", "-config", s.Config)
	s.Proc.HealthPort = s.HealthPort
	return s.Proc
}

// StartReady runs the server (again) and waits until `plinth-server
// healthcheck` passes.
func (s *Server) StartReady(tb testing.TB) {
	tb.Helper()
	s.Start(tb).waitHealthy(tb, s.Socket)
}

// CLI runs `plinth-server <command> -socketPath <admin socket> <args>`;
// command may be two words, such as "entry create".
func (s *Server) CLI(command string, args ...string) (stdout, stderr string, err error) {
	full := append(strings.Fields(command), "-socketPath", s.Socket)
	return Exec(filepath.Join(s.bin, "plinth-server"), append(full, args...)...)
}

// MustCLI runs a CLI command that must succeed and returns its stdout.
func (s *Server) MustCLI(tb testing.TB, command string, args ...string) string {
	tb.Helper()
	stdout, stderr, err := s.CLI(command, args...)
	if err != nil {
		tb.Fatalf("plinth-server %s %s: %v\n%s", command, strings.Join(args, " "), err, stderr)
	}
	return stdout
}

// CLIJSON runs a CLI command with -output json and decodes its output into
// v.
func (s *Server) CLIJSON(tb testing.TB, v any, command string, args ...string) {
	tb.Helper()
	out := s.MustCLI(tb, command, append(args, "-output", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		tb.Fatalf("plinth-server %s -output json: %v\n%s", command, err, out)
	}
}

// JoinToken generates a join token valid for ttl (whole seconds) that also
// registers NodeID as an alias of the agent that redeems it.
func (s *Server) JoinToken(tb testing.TB, ttl time.Duration) (token string, expiresAt time.Time) {
	tb.Helper()
	var tok struct {
		Value     string `json:"value"`
		ExpiresAt int64  `json:"expires_at,string"`
	}
	s.CLIJSON(tb, &tok, "token generate", "-spiffeID", NodeID, "-ttl", strconv.Itoa(int(ttl/time.Second)))
	if tok.Value == "" {
		tb.Fatal("token generate printed no token")
	}
	return tok.Value, time.Unix(tok.ExpiresAt, 0)
}

// CreateEntry registers a workload entry under NodeID and returns its ID.
func (s *Server) CreateEntry(tb testing.TB, id spiffeid.ID, selectors ...string) string {
	tb.Helper()
	args := []string{"-parentID", NodeID, "-spiffeID", id.String()}
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
	s.CLIJSON(tb, &resp, "entry create", args...)
	if len(resp.Results) != 1 || resp.Results[0].Status.Code != 0 || resp.Results[0].Entry.ID == "" {
		tb.Fatalf("entry create %s: %+v", id, resp)
	}
	return resp.Results[0].Entry.ID
}

// EntryCount returns `plinth-server entry count`.
func (s *Server) EntryCount(tb testing.TB) int {
	tb.Helper()
	var resp struct {
		Count int `json:"count"`
	}
	s.CLIJSON(tb, &resp, "entry count")
	return resp.Count
}

// AgentRecord is one agent of `plinth-server agent list -output json`.
type AgentRecord struct {
	ID struct {
		TrustDomain string `json:"trust_domain"`
		Path        string `json:"path"`
	} `json:"id"`
	AttestationType string `json:"attestation_type"`
	Serial          string `json:"x509svid_serial_number"`
	ExpiresAt       int64  `json:"x509svid_expires_at,string"`
	Banned          bool   `json:"banned"`
}

// SPIFFEID returns the agent's SPIFFE ID.
func (r AgentRecord) SPIFFEID() string { return "spiffe://" + r.ID.TrustDomain + r.ID.Path }

// Agents returns `plinth-server agent list`.
func (s *Server) Agents(tb testing.TB) []AgentRecord {
	tb.Helper()
	var resp struct {
		Agents []AgentRecord `json:"agents"`
	}
	s.CLIJSON(tb, &resp, "agent list")
	return resp.Agents
}

// BundlePEM returns `plinth-server bundle show`: the X.509 authorities.
func (s *Server) BundlePEM(tb testing.TB) string {
	tb.Helper()
	out := s.MustCLI(tb, "bundle show")
	if !strings.Contains(out, "-----BEGIN CERTIFICATE-----") {
		tb.Fatalf("bundle show printed no certificate:\n%s", out)
	}
	return out
}
