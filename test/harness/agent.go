package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// Agent is a plinth-agent of a Server, with its own directory, data and
// Workload API socket. Its configuration is written once, by NewAgent;
// every Start runs it again on the same configuration and data.
type Agent struct {
	Dir        string   // its private directory: configuration, data, socket
	DataDir    string   // its data_dir, where it keeps its SVID and keys
	Config     string   // path of its configuration file
	Socket     string   // its Workload API socket
	HealthPort int      // its health_checks listener's port on 127.0.0.1
	ID         string   // its SPIFFE ID, once started with a join token
	Proc       *Process // the current run, once started

	path string // of the plinth-agent binary
	runs int
}

const agentConfig = `agent {
    data_dir = "%[1]s/data"
    log_level = "DEBUG"
    server_address = "127.0.0.1"
    server_port = "%[2]d"
    socket_path = "%[1]s/agent.sock"
    trust_bundle_path = "%[1]s/bootstrap.crt"
    trust_domain = "` + TrustDomain + `"
    sync_interval = "%[3]s"
}

plugins {
%[5]s
    WorkloadAttestor "unix" {
        plugin_data {
            discover_workload_path = true
        }
    }
}

health_checks {
    listener_enabled = true
    bind_address = "127.0.0.1"
    bind_port = "%[4]d"
}
`

// NewAgent writes the configuration and bootstrap bundle of an agent of s,
// without starting it. syncInterval is its sync_interval.
func (s *Server) NewAgent(tb testing.TB, syncInterval time.Duration) *Agent {
	tb.Helper()
	return s.NewAgentWithPlugins(tb, syncInterval, joinTokenPlugins)
}

// joinTokenPlugins is the default node attestor and key manager; %[1]s is
// the agent's directory.
const joinTokenPlugins = `    NodeAttestor "join_token" {
        plugin_data {}
    }
    KeyManager "disk" {
        plugin_data {
            directory = "%[1]s/data"
        }
    }
`

// NewAgentWithPlugins is NewAgent with another NodeAttestor and KeyManager:
// plugins replaces those two blocks, with %[1]s standing for the agent's
// directory.
func (s *Server) NewAgentWithPlugins(tb testing.TB, syncInterval time.Duration, plugins string) *Agent {
	tb.Helper()
	dir := tempDir(tb)
	a := &Agent{
		Dir:        dir,
		DataDir:    filepath.Join(dir, "data"),
		Config:     filepath.Join(dir, "agent.conf"),
		Socket:     filepath.Join(dir, "agent.sock"),
		HealthPort: freePort(tb),
		path:       filepath.Join(s.bin, "plinth-agent"),
	}
	if err := os.Mkdir(a.DataDir, 0o700); err != nil {
		tb.Fatal(err)
	}
	writeFile(tb, filepath.Join(dir, "bootstrap.crt"), s.BundlePEM(tb))
	writeFile(tb, a.Config, fmt.Sprintf(agentConfig, dir, s.Port, syncInterval, a.HealthPort, fmt.Sprintf(plugins, dir)))
	return a
}

// StartAgent starts a new agent of s with a new join token and waits until
// it is healthy. The agent attests in the background: wait for an SVID
// with WaitSVIDs before relying on it.
func (s *Server) StartAgent(tb testing.TB, syncInterval time.Duration) *Agent {
	tb.Helper()
	a := s.NewAgent(tb, syncInterval)
	token, _ := s.JoinToken(tb, 10*time.Minute)
	a.StartReady(tb, token)
	return a
}

// Start runs the agent (again), with -joinToken unless token is empty,
// without waiting for it.
func (a *Agent) Start(tb testing.TB, token string) *Process {
	tb.Helper()
	args := []string{"run", "-config", a.Config}
	if token != "" {
		args = append(args, "-joinToken", token)
		a.ID = "spiffe://" + TrustDomain + "/spire/agent/join_token/" + token
	}
	a.runs++
	a.Proc = Start(tb, fmt.Sprintf("plinth-agent (run %d)", a.runs), a.path, args...)
	a.Proc.HealthPort = a.HealthPort
	return a.Proc
}

// StartReady runs the agent (again) like Start and waits until
// `plinth-agent healthcheck` passes.
func (a *Agent) StartReady(tb testing.TB, token string) {
	tb.Helper()
	a.Start(tb, token).waitHealthy(tb, a.Socket)
}

// Addr is the go-spiffe client option that reaches this agent.
func (a *Agent) Addr() workloadapi.ClientOption {
	return workloadapi.WithAddr("unix://" + a.Socket)
}

// FetchIDs returns the SPIFFE IDs of the X509-SVIDs the calling process
// gets from the agent, over a new connection, sorted.
func (a *Agent) FetchIDs(ctx context.Context) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	svids, err := workloadapi.FetchX509SVIDs(ctx, a.Addr())
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

// WaitSVIDs waits until the calling process gets exactly the X509-SVIDs
// for want: the agent has attested and synced.
func (a *Agent) WaitSVIDs(tb testing.TB, want ...spiffeid.ID) {
	tb.Helper()
	var wantIDs []string
	for _, id := range want {
		wantIDs = append(wantIDs, id.String())
	}
	slices.Sort(wantIDs)
	start := time.Now()
	err := Eventually(15*time.Second, func() error {
		if !a.Proc.Running() {
			return errStop{fmt.Errorf("%s exited: %v", a.Proc.Name, a.Proc.Err())}
		}
		ids, err := a.FetchIDs(context.Background())
		if err != nil {
			return err
		}
		if !slices.Equal(ids, wantIDs) {
			return fmt.Errorf("got SVIDs %v, want %v", ids, wantIDs)
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("waiting for SVIDs from %s: %v", a.Proc.Name, err)
	}
	tb.Logf("%s serves %v after %s", a.Proc.Name, wantIDs, time.Since(start).Round(time.Millisecond))
}
