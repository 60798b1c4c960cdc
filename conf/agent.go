package conf

import (
	"log/slog"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// DefaultAgentSocketPath is where the agent serves the Workload API when
// socket_path is not set, as SPIRE's.
const DefaultAgentSocketPath = "/tmp/spire-agent/public/api.sock"

// Agent is a decoded and validated agent configuration. Relative paths are
// kept as written; the caller resolves them against its working directory,
// as SPIRE does.
type Agent struct {
	TrustDomain spiffeid.TrustDomain // required
	DataDir     string               // required

	LogLevel  slog.Level // default INFO
	LogFormat string     // "text" (default) or "json"
	LogFile   string     // "" means standard error

	ServerAddress string // required
	ServerPort    int    // default 8081
	SocketPath    string // default DefaultAgentSocketPath

	// TrustBundlePath is the PEM bundle the agent trusts the server with on
	// first contact. Required unless InsecureBootstrap, and exclusive with it.
	TrustBundlePath string
	// InsecureBootstrap trusts whatever server answers on first contact.
	// For tests only: anyone on the network path can impersonate the server.
	InsecureBootstrap bool
	// JoinToken is a single-use secret; the -joinToken flag overrides it.
	// Never log it.
	JoinToken       string
	SyncInterval    time.Duration // default 5s
	AdminSocketPath string        // "" means no admin API

	// NodeAttestors are the node attestors, primary first: with more than
	// one, the agent presents all their evidence in one (composite)
	// attestation and takes its ID from the primary.
	NodeAttestors     []Plugin
	KeyManager        Plugin   // exactly one; Settings is AgentDiskKeyManager or MemoryKeyManager
	WorkloadAttestors []Plugin // one or more; Settings is UnixWorkloadAttestor
	HealthChecks      HealthChecks
}

// LoadAgent reads and decodes the agent configuration file at path. With
// expandEnv, $VAR and ${VAR} are replaced from the environment first, as
// with SPIRE's -expandEnv. Problems in the file are reported all at once as
// *Errors.
func LoadAgent(path string, expandEnv bool) (*Agent, error) {
	src, err := read(path, expandEnv)
	if err != nil {
		return nil, err
	}
	return ParseAgent(path, src)
}

// ParseAgent decodes an agent configuration; name is the file name used in
// error positions. Every problem is reported, all at once, as *Errors.
func ParseAgent(name string, src []byte) (*Agent, error) {
	d, top, err := parse(name, src)
	if err != nil {
		return nil, err
	}
	b := top.requiredObject("agent", "agent block")
	a := &Agent{
		TrustDomain: trustDomain(b),
		DataDir:     b.requiredString("data_dir"),

		LogLevel:  logLevel(b),
		LogFormat: logFormat(b),
		LogFile:   b.string("log_file", ""),

		ServerAddress: b.requiredString("server_address"),
		ServerPort:    b.port("server_port", 8081),
		SocketPath:    b.string("socket_path", DefaultAgentSocketPath),

		InsecureBootstrap: b.boolean("insecure_bootstrap", false),
		JoinToken:         b.string("join_token", ""),
		SyncInterval:      syncInterval(b),
		AdminSocketPath:   b.string("admin_socket_path", ""),
	}
	bundle, pos, ok := b.str("trust_bundle_path")
	switch {
	case !ok && pos.IsValid():
		// written, but not a string: reported
	case bundle != "" && a.InsecureBootstrap:
		d.errorf(pos, "trust_bundle_path: set together with insecure_bootstrap = true; keep one")
	case bundle == "" && !a.InsecureBootstrap && !b.quiet:
		d.errorf(b.pos, `missing required key "trust_bundle_path" in agent block (or set insecure_bootstrap = true)`)
	}
	a.TrustBundlePath = bundle
	b.end()

	plugins := decodePlugins(top, agentPlugins)
	a.NodeAttestors = plugins["NodeAttestor"]
	a.KeyManager = first(plugins["KeyManager"])
	a.WorkloadAttestors = plugins["WorkloadAttestor"]
	a.HealthChecks = decodeHealthChecks(top)
	top.end()

	if err := d.err(); err != nil {
		return nil, err
	}
	return a, nil
}

// syncInterval decodes sync_interval, which SPIRE also accepts in an
// experimental block.
func syncInterval(agent *block) time.Duration {
	const def = 5 * time.Second
	interval := agent.duration("sync_interval", def)
	exp := agent.object("experimental", "experimental block")
	if it := exp.lookup("sync_interval"); it != nil {
		if agent.has("sync_interval") {
			agent.d.errorf(it.Keys[0].Pos(), "sync_interval: set both in agent and in experimental; keep one")
		}
		interval = exp.duration("sync_interval", def)
	}
	exp.end()
	return interval
}
