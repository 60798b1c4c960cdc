package conf

import (
	"crypto/x509/pkix"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/plinth-id/plinth/hsm"
)

// okServerBlock and okServerPlugins are valid; test cases change one part
// and write the other as is, so that line numbers stay easy to read.
const okServerBlock = `server {
    trust_domain = "example.org"
    data_dir = "./.data"
}
`

const okServerPlugins = `plugins {
    DataStore "sql" { plugin_data { database_type = "sqlite3" connection_string = "db" } }
    KeyManager "memory" {}
    NodeAttestor "join_token" {}
}
`

func TestParseServerErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want string
	}{
		{
			name: "unknown key in server",
			src: `server {
    trust_domain = "example.org"
    data_dir = "./.data"
    bind_prot = "8081"
}
` + okServerPlugins,
			want: `s.conf:4: unknown key "bind_prot" in server block (did you mean "bind_port"?)`,
		},
		{
			name: "unknown key differing in case",
			src: `server {
    trust_domain = "example.org"
    Data_Dir = "./.data"
}
` + okServerPlugins,
			want: `s.conf:1: missing required key "data_dir" in server block
s.conf:3: unknown key "Data_Dir" in server block (did you mean "data_dir"?)`,
		},
		{
			name: "unknown key at top level",
			src: okServerBlock + okServerPlugins + `telemetry {
    Prometheus { port = 9988 }
}
`,
			want: `s.conf:10: unknown top-level key "telemetry"`,
		},
		{
			name: "unknown plugin type",
			src: okServerBlock + `plugins {
    DataStore "sql" { plugin_data { database_type = "sqlite3" connection_string = "db" } }
    KeyManager "memory" {}
    NodeAtestor "join_token" {}
    Notifier "k8sbundle" {}
}
`,
			want: `s.conf:5: missing NodeAttestor plugin (want at least one of: aws_iid, azure_msi, gcp_iit, join_token, tpm)
s.conf:8: unknown plugin type "NodeAtestor" (did you mean "NodeAttestor"?)
s.conf:9: unknown plugin type "Notifier" (Plinth knows DataStore, KeyManager, NodeAttestor, UpstreamAuthority)`,
		},
		{
			name: "unknown key in a plugin block",
			src: okServerBlock + `plugins {
    DataStore "sql" { plugin_data { database_type = "sqlite3" connection_string = "db" } }
    KeyManager "memory" { plugin_dat {} }
    NodeAttestor "join_token" {}
}
`,
			want: `s.conf:7: unknown key "plugin_dat" in KeyManager "memory" (did you mean "plugin_data"?)`,
		},
		{
			name: "unknown key in plugin_data",
			src: okServerBlock + `plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            connection_string = "db"
            log_sql = true
        }
    }
    KeyManager "disk" { plugin_data { keys_pth = "keys.json" } }
    NodeAttestor "join_token" {}
}
`,
			want: `s.conf:10: unknown key "log_sql" in plugin_data of DataStore "sql"
s.conf:13: missing required key "keys_path" in plugin_data of KeyManager "disk"
s.conf:13: unknown key "keys_pth" in plugin_data of KeyManager "disk" (did you mean "keys_path"?)`,
		},
		{
			name: "unknown key in health_checks",
			src: okServerBlock + okServerPlugins + `health_checks {
    listener_enabled = true
    bind_adress = "localhost"
}
`,
			want: `s.conf:12: unknown key "bind_adress" in health_checks block (did you mean "bind_address"?)`,
		},
		{
			name: "several errors at once",
			src: `server {
    trust_domain = "Example.org"
    bind_port = 99999
    ca_ttl = "1d"
    log_level = "LOUD"
    ca_key_type = "ec-p999"
    ca_subject { country = "US" }
}
plugins {
    DataStore "sql" { plugin_data { database_type = "postgres" connection_string = "dbname=spire" } }
    KeyManager "memory" {}
    NodeAttestor "k8s_psat" {}
}
health_checks { bind_port = "http"  live_path = "live" }
`,
			want: `s.conf:1: missing required key "data_dir" in server block
s.conf:2: trust_domain: "Example.org" is not a trust domain: trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores
s.conf:3: bind_port: port 99999 is out of range (1-65535)
s.conf:4: ca_ttl: "1d" is not a duration (write it like "24h", "90m" or "30s")
s.conf:5: log_level: unknown level "LOUD" (want DEBUG, INFO, WARN or ERROR)
s.conf:6: ca_key_type: unknown key type "ec-p999" (want ec-p256, ec-p384, rsa-2048 or rsa-4096)
s.conf:7: country: want a list of strings, got a string
s.conf:10: database_type: "postgres" is not supported; use "sqlite3" (postgres support comes later)
s.conf:12: unknown NodeAttestor "k8s_psat" (Plinth knows aws_iid, azure_msi, gcp_iit, join_token, tpm)
s.conf:14: bind_port: "http" is not a number
s.conf:14: live_path: "live" must start with "/"`,
		},
		{
			name: "bad durations",
			src: `server {
    trust_domain = "example.org"
    data_dir = "./.data"
    ca_ttl = "24"
    default_x509_svid_ttl = "0s"
    default_jwt_svid_ttl = 300
    agent_ttl = "-1h"
}
` + okServerPlugins,
			want: `s.conf:4: ca_ttl: "24" is not a duration (write it like "24h", "90m" or "30s")
s.conf:5: default_x509_svid_ttl: must be positive
s.conf:6: default_jwt_svid_ttl: want a string, got a number
s.conf:7: agent_ttl: must be positive`,
		},
		{
			name: "bad trust domain",
			src: `server {
    trust_domain = "example.org:8081"
    data_dir = "./.data"
}
` + okServerPlugins,
			want: `s.conf:2: trust_domain: "example.org:8081" is not a trust domain: trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores`,
		},
		{
			name: "bad admin IDs",
			src: `server {
    trust_domain = "example.org"
    data_dir = "./.data"
    admin_ids = [
        "spiffe://example.org/admin",
        "spiffe://example.org/bad//path",
        "example.org/admin",
        42,
    ]
}
` + okServerPlugins,
			want: `s.conf:6: admin_ids: "spiffe://example.org/bad//path" is not a SPIFFE ID: path cannot contain empty segments
s.conf:7: admin_ids: "example.org/admin" is not a SPIFFE ID: scheme is missing or invalid
s.conf:8: admin_ids[3]: want a string, got a number`,
		},
		{
			name: "ports out of range",
			src: `server {
    trust_domain = "example.org"
    data_dir = "./.data"
    bind_port = "0"
}
` + okServerPlugins + `health_checks {
    bind_port = 65536
}
`,
			want: `s.conf:4: bind_port: port 0 is out of range (1-65535)
s.conf:12: bind_port: port 65536 is out of range (1-65535)`,
		},
		{
			name: "ports not a number",
			src: `server {
    trust_domain = "example.org"
    data_dir = "./.data"
    bind_port = "eighty"
}
` + okServerPlugins + `health_checks {
    bind_port = 80.5
}
`,
			want: `s.conf:4: bind_port: "eighty" is not a number
s.conf:12: bind_port: 80.5 is not a whole number`,
		},
		{
			name: "empty file",
			src:  "# nothing here\n",
			want: `s.conf:1: missing server block
s.conf:1: missing plugins block`,
		},
		{
			name: "missing required keys",
			src: `server {
    bind_port = "8081"
}
plugins {
}
`,
			want: `s.conf:1: missing required key "trust_domain" in server block
s.conf:1: missing required key "data_dir" in server block
s.conf:4: missing DataStore plugin (want exactly one of: sql)
s.conf:4: missing KeyManager plugin (want exactly one of: aws_kms, disk, memory, pkcs11)
s.conf:4: missing NodeAttestor plugin (want at least one of: aws_iid, azure_msi, gcp_iit, join_token, tpm)`,
		},
		{
			name: "empty required keys",
			src: `server {
    trust_domain = ""
    data_dir = ""
}
` + okServerPlugins,
			want: `s.conf:2: trust_domain: must not be empty
s.conf:3: data_dir: must not be empty`,
		},
		{
			name: "missing plugin_data keys",
			src: okServerBlock + `plugins {
    DataStore "sql" {}
    KeyManager "disk" { plugin_data {} }
    NodeAttestor "join_token" {}
}
`,
			want: `s.conf:6: missing required key "connection_string" in plugin_data of DataStore "sql"
s.conf:6: missing required key "database_type" in plugin_data of DataStore "sql"
s.conf:7: missing required key "keys_path" in plugin_data of KeyManager "disk"`,
		},
		{
			name: "two key managers",
			src: okServerBlock + `plugins {
    DataStore "sql" { plugin_data { database_type = "sqlite3" connection_string = "db" } }
    KeyManager "disk" { plugin_data { keys_path = "keys.json" } }
    KeyManager "memory" {}
    NodeAttestor "join_token" {}
}
`,
			want: `s.conf:8: more than one KeyManager: "disk" (line 7) and "memory"; keep one`,
		},
		{
			name: "same plugin twice",
			src: okServerBlock + `plugins {
    DataStore "sql" { plugin_data { database_type = "sqlite3" connection_string = "db" } }
    KeyManager "memory" {}
    NodeAttestor "join_token" {}
    NodeAttestor "join_token" {}
}
`,
			want: `s.conf:9: duplicate NodeAttestor "join_token" (first on line 8)`,
		},
		{
			name: "unknown plugin name",
			src: okServerBlock + `plugins {
    DataStore "sql" { plugin_data { database_type = "sqlite3" connection_string = "db" } }
    KeyManager "vault" { plugin_data { address = "https://vault" } }
    NodeAttestor "join_token" {}
}
`,
			want: `s.conf:7: unknown KeyManager "vault" (Plinth knows aws_kms, disk, memory, pkcs11)`,
		},
		{
			name: "PIN in the configuration",
			src: okServerBlock + `plugins {
    DataStore "sql" { plugin_data { database_type = "sqlite3" connection_string = "db" } }
    KeyManager "pkcs11" { plugin_data { module_path = "/m.so" token_label = "t" pin = "1234" } }
    NodeAttestor "join_token" {}
}
`,
			want: `s.conf:7: set exactly one of pin_file and pin_env
s.conf:7: pin: a PIN is never written in the configuration; put it in a file (pin_file) or an environment variable (pin_env)`,
		},
		{
			name: "plugin without a name",
			src: okServerBlock + `plugins {
    DataStore "sql" { plugin_data { database_type = "sqlite3" connection_string = "db" } }
    KeyManager "memory" {}
    NodeAttestor { join_token { plugin_data {} } }
    NodeAttestor "join_token" "x" {}
}
`,
			want: `s.conf:5: missing NodeAttestor plugin (want at least one of: aws_iid, azure_msi, gcp_iit, join_token, tpm)
s.conf:8: NodeAttestor: want NodeAttestor "name" { plugin_data { … } }
s.conf:9: NodeAttestor: want NodeAttestor "name" { plugin_data { … } }`,
		},
		{
			name: "wrong types",
			src: `server {
    trust_domain = ["example.org"]
    data_dir = 3
    log_level = true
    socket_path { path = "/tmp/x" }
    admin_ids = "spiffe://example.org/admin"
    ca_subject = "C=US"
    bind_port = ["8081"]
}
plugins {
    DataStore "sql" { plugin_data = "sqlite3" }
    KeyManager "memory" { enabled = "yes" }
    NodeAttestor "join_token" {}
}
health_checks = true
`,
			want: `s.conf:2: trust_domain: want a string, got a list
s.conf:3: data_dir: want a string, got a number
s.conf:4: log_level: want a string, got a bool
s.conf:5: socket_path: want a string, got a block
s.conf:6: admin_ids: want a list of strings, got a string
s.conf:7: ca_subject: want a block, got a string
s.conf:8: bind_port: want a number, got a list
s.conf:11: plugin_data: want a block, got a string
s.conf:12: enabled: want true or false, got a string
s.conf:15: health_checks: want a block, got a bool`,
		},
		{
			name: "external plugins",
			src: okServerBlock + `plugins {
    DataStore "sql" { plugin_data { database_type = "sqlite3" connection_string = "db" } }
    KeyManager "memory" {}
    NodeAttestor "join_token" {
        plugin_cmd = "/opt/spire/plugins/join_token"
        plugin_checksum = "0123abcd"
        plugin_data_file = "join_token.conf"
    }
}
`,
			want: `s.conf:9: external plugins are not supported by Plinth; remove plugin_cmd
s.conf:10: external plugins are not supported by Plinth; remove plugin_checksum
s.conf:11: plugin_data_file is not supported by Plinth; write the settings in plugin_data`,
		},
		{
			name: "duplicate keys",
			src: `server {
    trust_domain = "example.org"
    data_dir = "./.data"
    data_dir = "./other"
}
` + okServerPlugins + `health_checks {}
health_checks {}
`,
			want: `s.conf:4: duplicate key "data_dir" (first set on line 3)
s.conf:12: duplicate key "health_checks" (first set on line 11)`,
		},
		{
			name: "unexpected label",
			src: `server "main" {
    trust_domain = "example.org"
    data_dir = "./.data"
}
` + okServerPlugins,
			want: `s.conf:1: server: unexpected label "main"`,
		},
		{
			name: "unknown log format and key type",
			src: `server {
    trust_domain = "example.org"
    data_dir = "./.data"
    log_format = "logfmt"
    jwt_key_type = "ed25519"
}
` + okServerPlugins,
			want: `s.conf:4: log_format: unknown format "logfmt" (want text or json)
s.conf:5: jwt_key_type: unknown key type "ed25519" (want ec-p256, ec-p384, rsa-2048 or rsa-4096)`,
		},
		{
			name: "syntax error",
			src: `server {
    trust_domain = example.org
}
`,
			want: `s.conf:2: syntax error: Unknown token: 2:20 IDENT example.org`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseServer("s.conf", []byte(tt.src))
			var errs *Errors
			if !errors.As(err, &errs) {
				t.Fatalf("ParseServer: got %v (%T), want *Errors", err, err)
			}
			if got := errs.Error(); got != tt.want {
				t.Errorf("ParseServer errors:\n%s\nwant:\n%s", got, tt.want)
			}
			if s != nil {
				t.Errorf("ParseServer returned a config with errors: %+v", s)
			}
		})
	}
}

func TestErrorsList(t *testing.T) {
	_, err := ParseServer("s.conf", []byte(`server {
    trust_domain = "example.org"
    bind_port = 0
}
`+okServerPlugins))
	var errs *Errors
	if !errors.As(err, &errs) {
		t.Fatalf("ParseServer: got %v, want *Errors", err)
	}
	want := []Error{
		{Pos: Pos{File: "s.conf", Line: 1}, Msg: `missing required key "data_dir" in server block`},
		{Pos: Pos{File: "s.conf", Line: 3}, Msg: `bind_port: port 0 is out of range (1-65535)`},
	}
	if !reflect.DeepEqual(errs.List, want) {
		t.Errorf("Errors.List:\n got %+v\nwant %+v", errs.List, want)
	}
}

func TestParseServerDefaults(t *testing.T) {
	s, err := ParseServer("s.conf", []byte(okServerBlock+okServerPlugins))
	if err != nil {
		t.Fatal(err)
	}
	want := &Server{
		TrustDomain:        spiffeid.RequireTrustDomainFromString("example.org"),
		BindAddress:        "0.0.0.0",
		BindPort:           8081,
		SocketPath:         "/tmp/spire-server/private/api.sock",
		DataDir:            "./.data",
		LogLevel:           slog.LevelInfo,
		LogFormat:          "text",
		CATTL:              24 * time.Hour,
		DefaultX509SVIDTTL: time.Hour,
		DefaultJWTSVIDTTL:  5 * time.Minute,
		CAKeyType:          hsm.ECP256,
		JWTKeyType:         hsm.ECP256,
		CASubject:          pkix.Name{Country: []string{"US"}, Organization: []string{"SPIFFE"}},
		DataStore:          Plugin{Kind: "DataStore", Name: "sql", Settings: SQLDataStore{DatabaseType: "sqlite3", ConnectionString: "db"}},
		KeyManager:         Plugin{Kind: "KeyManager", Name: "memory", Settings: MemoryKeyManager{}},
		NodeAttestors:      []Plugin{{Kind: "NodeAttestor", Name: "join_token", Settings: JoinTokenNodeAttestor{}}},
		HealthChecks:       HealthChecks{BindAddress: "localhost", BindPort: 80, LivePath: "/live", ReadyPath: "/ready"},
	}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("ParseServer defaults:\n got %+v\nwant %+v", s, want)
	}
}

func TestParseServerValues(t *testing.T) {
	src := `server {
    trust_domain = "spiffe://example.org"
    bind_address = "127.0.0.1"
    bind_port = 9081
    socket_path = ""
    data_dir = <<EOT
/var/lib/plinth
EOT
    log_level = "debug"
    log_format = "JSON"
    log_file = "/var/log/plinth.log"
    ca_ttl = "168h"
    default_x509_svid_ttl = "30m"
    default_jwt_svid_ttl = "1m30s"
    agent_ttl = "72h"
    ca_key_type = "rsa-2048"
    ca_subject = {
        country = ["DE"],
        organization = ["Example", "Plinth"],
        common_name = "Example CA",
    }
    admin_ids = ["spiffe://example.org/admin", "spiffe://other.org/ops"]
    jwt_issuer = "https://oidc.example.org"
}
plugins {
    "DataStore" "sql" { plugin_data = { database_type = "sqlite3", connection_string = "db" } }
    KeyManager "disk" { enabled = false }
    KeyManager "pkcs11" { enabled = false  plugin_cmd = "/opt/x" }
    KeyManager "memory" { enabled = true }
    NodeAttestor "join_token" { plugin_data {} }
    UpstreamAuthority "disk" {
        enabled = false
        plugin_data { cert_file_path = "ca.crt" }
    }
}
health_checks {
    listener_enabled = true
    bind_address = "0.0.0.0"
    bind_port = "8080"
    live_path = "/healthz"
    ready_path = "/readyz"
}
`
	s, err := ParseServer("s.conf", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	want := &Server{
		TrustDomain:        spiffeid.RequireTrustDomainFromString("example.org"),
		BindAddress:        "127.0.0.1",
		BindPort:           9081,
		SocketPath:         "/tmp/spire-server/private/api.sock",
		DataDir:            "/var/lib/plinth\n",
		LogLevel:           slog.LevelDebug,
		LogFormat:          "json",
		LogFile:            "/var/log/plinth.log",
		CATTL:              168 * time.Hour,
		DefaultX509SVIDTTL: 30 * time.Minute,
		DefaultJWTSVIDTTL:  90 * time.Second,
		AgentTTL:           72 * time.Hour,
		CAKeyType:          hsm.RSA2048,
		JWTKeyType:         hsm.RSA2048,
		CASubject:          pkix.Name{Country: []string{"DE"}, Organization: []string{"Example", "Plinth"}, CommonName: "Example CA"},
		AdminIDs:           []spiffeid.ID{spiffeid.RequireFromString("spiffe://example.org/admin"), spiffeid.RequireFromString("spiffe://other.org/ops")},
		JWTIssuer:          "https://oidc.example.org",
		DataStore:          Plugin{Kind: "DataStore", Name: "sql", Settings: SQLDataStore{DatabaseType: "sqlite3", ConnectionString: "db"}},
		KeyManager:         Plugin{Kind: "KeyManager", Name: "memory", Settings: MemoryKeyManager{}},
		NodeAttestors:      []Plugin{{Kind: "NodeAttestor", Name: "join_token", Settings: JoinTokenNodeAttestor{}}},
		HealthChecks:       HealthChecks{ListenerEnabled: true, BindAddress: "0.0.0.0", BindPort: 8080, LivePath: "/healthz", ReadyPath: "/readyz"},
	}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("ParseServer:\n got %+v\nwant %+v", s, want)
	}
}

func TestLoadServerExpandEnv(t *testing.T) {
	path := filepath.Join(t.TempDir(), "server.conf")
	src := `server {
    trust_domain = "${PLINTH_TEST_TD}"
    data_dir = "$PLINTH_TEST_DIR/data"
}
` + okServerPlugins
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PLINTH_TEST_TD", "example.org")
	t.Setenv("PLINTH_TEST_DIR", "/srv/plinth")

	s, err := LoadServer(path, true)
	if err != nil {
		t.Fatal(err)
	}
	if s.TrustDomain.Name() != "example.org" || s.DataDir != "/srv/plinth/data" {
		t.Errorf("LoadServer with expandEnv: trust domain %q, data dir %q; want example.org, /srv/plinth/data", s.TrustDomain, s.DataDir)
	}

	_, err = LoadServer(path, false)
	want := path + `:2: trust_domain: "${PLINTH_TEST_TD}" is not a trust domain: trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores`
	if err == nil || err.Error() != want {
		t.Errorf("LoadServer without expandEnv: got %v, want %s", err, want)
	}
}

func TestLoadMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.conf")
	if _, err := LoadServer(path, false); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadServer(%s): got %v, want an error wrapping os.ErrNotExist", path, err)
	}
	if _, err := LoadAgent(path, false); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadAgent(%s): got %v, want an error wrapping os.ErrNotExist", path, err)
	}
}

func TestExamples(t *testing.T) {
	s, err := LoadServer("examples/server.conf", false)
	if err != nil {
		t.Fatalf("examples/server.conf:\n%v", err)
	}
	if s.TrustDomain.Name() != "example.org" || s.SocketPath != "/tmp/plinth-server/private/api.sock" ||
		s.KeyManager.Settings != (DiskKeyManager{KeysPath: "./.data/keys.json"}) {
		t.Errorf("examples/server.conf: got %+v", s)
	}
	a, err := LoadAgent("examples/agent.conf", false)
	if err != nil {
		t.Fatalf("examples/agent.conf:\n%v", err)
	}
	if a.TrustDomain.Name() != "example.org" || a.SocketPath != "/tmp/plinth-agent/public/api.sock" ||
		a.TrustBundlePath != "./.data/bootstrap.crt" {
		t.Errorf("examples/agent.conf: got %+v", a)
	}
}
