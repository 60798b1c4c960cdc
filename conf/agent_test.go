package conf

import (
	"errors"
	"log/slog"
	"reflect"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

const okAgentBlock = `agent {
    trust_domain = "example.org"
    data_dir = "./.data"
    server_address = "127.0.0.1"
    trust_bundle_path = "./.data/bootstrap.crt"
}
`

const okAgentPlugins = `plugins {
    NodeAttestor "join_token" {}
    KeyManager "memory" {}
    WorkloadAttestor "unix" {}
}
`

func TestParseAgentErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want string
	}{
		{
			name: "missing required keys",
			src: `agent {
    server_port = 8081
}
` + okAgentPlugins,
			want: `a.conf:1: missing required key "trust_domain" in agent block
a.conf:1: missing required key "data_dir" in agent block
a.conf:1: missing required key "server_address" in agent block
a.conf:1: missing required key "trust_bundle_path" in agent block (or set insecure_bootstrap = true)`,
		},
		{
			name: "missing blocks",
			src:  "",
			want: `a.conf:1: missing agent block
a.conf:1: missing plugins block`,
		},
		{
			name: "unknown keys",
			src: `agent {
    trust_domain = "example.org"
    data_dir = "./.data"
    server_address = "127.0.0.1"
    trust_bundle_path = "./.data/bootstrap.crt"
    trust_bundle_url = "https://example.org/bundle"
}
plugins {
    NodeAttestor "join_token" {}
    KeyManager "disk" { plugin_data { directory = "./.data" dir = "x" } }
    WorkloadAttestor "unix" { plugin_data { discover_workload_paths = true } }
}
health_checks { ready = "/ready" }
`,
			want: `a.conf:6: unknown key "trust_bundle_url" in agent block (did you mean "trust_bundle_path"?)
a.conf:10: unknown key "dir" in plugin_data of KeyManager "disk"
a.conf:11: unknown key "discover_workload_paths" in plugin_data of WorkloadAttestor "unix" (did you mean "discover_workload_path"?)
a.conf:13: unknown key "ready" in health_checks block`,
		},
		{
			name: "bad values",
			src: `agent {
    trust_domain = "example.org/"
    data_dir = "./.data"
    server_address = "127.0.0.1"
    server_port = "65536"
    trust_bundle_path = "./.data/bootstrap.crt"
    sync_interval = "5"
    log_level = "TRACE"
}
plugins {
    NodeAttestor "join_token" {}
    KeyManager "disk" {}
    WorkloadAttestor "unix" { plugin_data { workload_size_limit = "1MB" } }
}
`,
			want: `a.conf:2: trust_domain: "example.org/" is not a trust domain: trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores
a.conf:5: server_port: port 65536 is out of range (1-65535)
a.conf:7: sync_interval: "5" is not a duration (write it like "24h", "90m" or "30s")
a.conf:8: log_level: unknown level "TRACE" (want DEBUG, INFO, WARN or ERROR)
a.conf:12: missing required key "directory" in plugin_data of KeyManager "disk"
a.conf:13: workload_size_limit: "1MB" is not a number`,
		},
		{
			name: "insecure bootstrap with a trust bundle",
			src: `agent {
    trust_domain = "example.org"
    data_dir = "./.data"
    server_address = "127.0.0.1"
    trust_bundle_path = "./.data/bootstrap.crt"
    insecure_bootstrap = true
}
` + okAgentPlugins,
			want: `a.conf:5: trust_bundle_path: set together with insecure_bootstrap = true; keep one`,
		},
		{
			name: "sync_interval twice",
			src: `agent {
    trust_domain = "example.org"
    data_dir = "./.data"
    server_address = "127.0.0.1"
    trust_bundle_path = "./.data/bootstrap.crt"
    sync_interval = "5s"
    experimental {
        sync_interval = "10s"
        named_pipe_name = "x"
    }
}
` + okAgentPlugins,
			want: `a.conf:8: sync_interval: set both in agent and in experimental; keep one
a.conf:9: unknown key "named_pipe_name" in experimental block`,
		},
		{
			name: "plugin counts",
			src: okAgentBlock + `plugins {
    NodeAttestor "join_token" {}
    NodeAttestor "x509pop" { enabled = true }
    KeyManager "memory" {}
    WorkloadAttestor "k8s" {}
}
`,
			want: `a.conf:9: unknown NodeAttestor "x509pop" (Plinth knows aws_iid, azure_msi, gcp_iit, join_token, tpm)
a.conf:11: unknown WorkloadAttestor "k8s" (Plinth knows unix)`,
		},
		{
			name: "missing plugins",
			src: okAgentBlock + `plugins {
    DataStore "sql" {}
}
`,
			want: `a.conf:7: missing KeyManager plugin (want exactly one of: disk, memory, tpm)
a.conf:7: missing NodeAttestor plugin (want at least one of: aws_iid, azure_msi, gcp_iit, join_token, tpm)
a.conf:7: missing WorkloadAttestor plugin (want at least one of: unix)
a.conf:8: unknown plugin type "DataStore" (Plinth knows KeyManager, NodeAttestor, WorkloadAttestor)`,
		},
		{
			name: "wrong types",
			src: `agent {
    trust_domain = "example.org"
    data_dir = "./.data"
    server_address = "127.0.0.1"
    insecure_bootstrap = "true"
    join_token = 1234
    experimental = "on"
    trust_bundle_path = ["./a.crt", "./b.crt"]
}
plugins {
    NodeAttestor "join_token" {}
    KeyManager "memory" {}
    WorkloadAttestor "unix" { plugin_data { discover_workload_path = 1 } }
}
`,
			want: `a.conf:5: insecure_bootstrap: want true or false, got a string
a.conf:6: join_token: want a string, got a number
a.conf:7: experimental: want a block, got a string
a.conf:8: trust_bundle_path: want a string, got a list
a.conf:13: discover_workload_path: want true or false, got a number`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := ParseAgent("a.conf", []byte(tt.src))
			var errs *Errors
			if !errors.As(err, &errs) {
				t.Fatalf("ParseAgent: got %v (%T), want *Errors", err, err)
			}
			if got := errs.Error(); got != tt.want {
				t.Errorf("ParseAgent errors:\n%s\nwant:\n%s", got, tt.want)
			}
			if a != nil {
				t.Errorf("ParseAgent returned a config with errors: %+v", a)
			}
		})
	}
}

func TestParseAgentDefaults(t *testing.T) {
	a, err := ParseAgent("a.conf", []byte(okAgentBlock+okAgentPlugins))
	if err != nil {
		t.Fatal(err)
	}
	want := &Agent{
		TrustDomain:       spiffeid.RequireTrustDomainFromString("example.org"),
		DataDir:           "./.data",
		LogLevel:          slog.LevelInfo,
		LogFormat:         "text",
		ServerAddress:     "127.0.0.1",
		ServerPort:        8081,
		SocketPath:        "/tmp/spire-agent/public/api.sock",
		TrustBundlePath:   "./.data/bootstrap.crt",
		SyncInterval:      5 * time.Second,
		NodeAttestors:     []Plugin{{Kind: "NodeAttestor", Name: "join_token", Settings: JoinTokenNodeAttestor{}}},
		KeyManager:        Plugin{Kind: "KeyManager", Name: "memory", Settings: MemoryKeyManager{}},
		WorkloadAttestors: []Plugin{{Kind: "WorkloadAttestor", Name: "unix", Settings: UnixWorkloadAttestor{}}},
		HealthChecks:      HealthChecks{BindAddress: "localhost", BindPort: 80, LivePath: "/live", ReadyPath: "/ready"},
	}
	if !reflect.DeepEqual(a, want) {
		t.Errorf("ParseAgent defaults:\n got %+v\nwant %+v", a, want)
	}
}

func TestParseAgentValues(t *testing.T) {
	src := `agent {
    trust_domain = "example.org"
    data_dir = "/var/lib/plinth-agent"
    log_level = "warn"
    log_format = "json"
    log_file = "/var/log/plinth-agent.log"
    server_address = "plinth.example.org"
    server_port = 443
    socket_path = "/run/plinth/api.sock"
    insecure_bootstrap = true
    join_token = "7a0e2f5c"
    admin_socket_path = "/run/plinth/admin.sock"
    experimental { sync_interval = "1m" }
}
plugins {
    NodeAttestor "join_token" { plugin_data {} }
    KeyManager "disk" { plugin_data { directory = "/var/lib/plinth-agent/keys" } }
    WorkloadAttestor "unix" {
        plugin_data {
            discover_workload_path = true
            workload_size_limit = "-1"
        }
    }
}
`
	a, err := ParseAgent("a.conf", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	want := &Agent{
		TrustDomain:       spiffeid.RequireTrustDomainFromString("example.org"),
		DataDir:           "/var/lib/plinth-agent",
		LogLevel:          slog.LevelWarn,
		LogFormat:         "json",
		LogFile:           "/var/log/plinth-agent.log",
		ServerAddress:     "plinth.example.org",
		ServerPort:        443,
		SocketPath:        "/run/plinth/api.sock",
		InsecureBootstrap: true,
		JoinToken:         "7a0e2f5c",
		SyncInterval:      time.Minute,
		AdminSocketPath:   "/run/plinth/admin.sock",
		NodeAttestors:     []Plugin{{Kind: "NodeAttestor", Name: "join_token", Settings: JoinTokenNodeAttestor{}}},
		KeyManager:        Plugin{Kind: "KeyManager", Name: "disk", Settings: AgentDiskKeyManager{Directory: "/var/lib/plinth-agent/keys"}},
		WorkloadAttestors: []Plugin{{Kind: "WorkloadAttestor", Name: "unix", Settings: UnixWorkloadAttestor{DiscoverWorkloadPath: true, WorkloadSizeLimit: -1}}},
		HealthChecks:      HealthChecks{BindAddress: "localhost", BindPort: 80, LivePath: "/live", ReadyPath: "/ready"},
	}
	if !reflect.DeepEqual(a, want) {
		t.Errorf("ParseAgent:\n got %+v\nwant %+v", a, want)
	}
}
