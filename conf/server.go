package conf

import (
	"crypto/x509/pkix"
	"log/slog"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/plinth-id/plinth/hsm"
)

// DefaultServerSocketPath is where the server's admin API listens when
// socket_path is not set, as SPIRE's.
const DefaultServerSocketPath = "/tmp/spire-server/private/api.sock"

// Server is a decoded and validated server configuration. Relative paths
// are kept as written; the caller resolves them against its working
// directory, as SPIRE does.
type Server struct {
	TrustDomain spiffeid.TrustDomain // required
	BindAddress string               // default "0.0.0.0"
	BindPort    int                  // default 8081
	SocketPath  string               // default DefaultServerSocketPath
	DataDir     string               // required

	LogLevel  slog.Level // default INFO
	LogFormat string     // "text" (default) or "json"
	LogFile   string     // "" means standard error

	CATTL              time.Duration // default 24h
	DefaultX509SVIDTTL time.Duration // default 1h
	DefaultJWTSVIDTTL  time.Duration // default 5m
	AgentTTL           time.Duration // 0 (default): the server's default for agent SVIDs

	CAKeyType  hsm.KeyType // default ec-p256
	JWTKeyType hsm.KeyType // default CAKeyType
	CASubject  pkix.Name   // default C=US, O=SPIFFE; as written when ca_subject is set
	AdminIDs   []spiffeid.ID
	JWTIssuer  string

	DataStore     Plugin   // exactly one; Settings is SQLDataStore
	KeyManager    Plugin   // exactly one; Settings is DiskKeyManager or MemoryKeyManager
	NodeAttestors []Plugin // one or more; Settings is JoinTokenNodeAttestor or TPMNodeAttestor
	// UpstreamAuthority is optional; Settings is DiskUpstreamAuthority.
	UpstreamAuthority *Plugin
	HealthChecks      HealthChecks
}

// LoadServer reads and decodes the server configuration file at path. With
// expandEnv, $VAR and ${VAR} are replaced from the environment first, as
// with SPIRE's -expandEnv. Problems in the file are reported all at once as
// *Errors.
func LoadServer(path string, expandEnv bool) (*Server, error) {
	src, err := read(path, expandEnv)
	if err != nil {
		return nil, err
	}
	return ParseServer(path, src)
}

// ParseServer decodes a server configuration; name is the file name used in
// error positions. Every problem is reported, all at once, as *Errors.
func ParseServer(name string, src []byte) (*Server, error) {
	d, top, err := parse(name, src)
	if err != nil {
		return nil, err
	}
	b := top.requiredObject("server", "server block")
	s := &Server{
		TrustDomain: trustDomain(b),
		BindAddress: b.string("bind_address", "0.0.0.0"),
		BindPort:    b.port("bind_port", 8081),
		SocketPath:  b.string("socket_path", DefaultServerSocketPath),
		DataDir:     b.requiredString("data_dir"),

		LogLevel:  logLevel(b),
		LogFormat: logFormat(b),
		LogFile:   b.string("log_file", ""),

		CATTL:              b.duration("ca_ttl", 24*time.Hour),
		DefaultX509SVIDTTL: b.duration("default_x509_svid_ttl", time.Hour),
		DefaultJWTSVIDTTL:  b.duration("default_jwt_svid_ttl", 5*time.Minute),
		AgentTTL:           b.duration("agent_ttl", 0),

		CAKeyType: keyType(b, "ca_key_type", hsm.ECP256),
		CASubject: caSubject(b),
		AdminIDs:  adminIDs(b),
		JWTIssuer: b.string("jwt_issuer", ""),
	}
	s.JWTKeyType = keyType(b, "jwt_key_type", s.CAKeyType)
	b.end()

	plugins := decodePlugins(top, serverPlugins)
	s.DataStore = first(plugins["DataStore"])
	s.KeyManager = first(plugins["KeyManager"])
	s.NodeAttestors = plugins["NodeAttestor"]
	if ups := plugins["UpstreamAuthority"]; len(ups) > 0 {
		s.UpstreamAuthority = &ups[0]
	}
	s.HealthChecks = decodeHealthChecks(top)
	top.end()

	if err := d.err(); err != nil {
		return nil, err
	}
	return s, nil
}

// caSubject decodes ca_subject { country = […] organization = […] common_name = "…" }.
func caSubject(server *block) pkix.Name {
	b := server.object("ca_subject", "ca_subject block")
	if !b.present {
		return pkix.Name{Country: []string{"US"}, Organization: []string{"SPIFFE"}}
	}
	country, _ := b.stringList("country")
	org, _ := b.stringList("organization")
	name := pkix.Name{Country: country, Organization: org, CommonName: b.string("common_name", "")}
	b.end()
	return name
}

func adminIDs(b *block) []spiffeid.ID {
	vals, pos := b.stringList("admin_ids")
	var ids []spiffeid.ID
	for i, v := range vals {
		id, err := spiffeid.FromString(v)
		if err != nil {
			b.d.errorf(pos[i], "admin_ids: %q is not a SPIFFE ID: %v", v, err)
			continue
		}
		ids = append(ids, id)
	}
	return ids
}
