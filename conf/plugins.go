package conf

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/hcl/hcl/ast"
	"github.com/plinth-id/plinth/tpm/verify"
)

// Plugin is one enabled block of the plugins section, such as
// `KeyManager "disk" { plugin_data { keys_path = "…" } }`.
type Plugin struct {
	Kind string // as written: "KeyManager"
	Name string // "disk"
	// Settings is the decoded plugin_data: a value (not a pointer) of the
	// type the plugin's row in the table names, e.g. DiskKeyManager for the
	// server's KeyManager "disk". Composition roots type-switch on it.
	Settings any
}

// The settings of each plugin Plinth knows, one type per plugin. A plugin
// that takes no settings still has a type, so that a type switch can name it.

// SQLDataStore is the plugin_data of the server's DataStore "sql".
type SQLDataStore struct {
	DatabaseType     string // "sqlite3" (postgres comes later)
	ConnectionString string // for sqlite3, a file path as written
}

// DiskKeyManager is the plugin_data of the server's KeyManager "disk".
type DiskKeyManager struct {
	KeysPath string // the key file, as written
}

// AgentDiskKeyManager is the plugin_data of the agent's KeyManager "disk".
type AgentDiskKeyManager struct {
	Directory string // where the key file lives, as written
}

// MemoryKeyManager is KeyManager "memory" (server and agent): keys live in
// memory and die with the process. It has no settings.
type MemoryKeyManager struct{}

// JoinTokenNodeAttestor is NodeAttestor "join_token" (server and agent). It
// has no settings: the agent's token comes from the agent block or the
// -joinToken flag.
type JoinTokenNodeAttestor struct{}

// UnixWorkloadAttestor is the plugin_data of the agent's WorkloadAttestor "unix".
type UnixWorkloadAttestor struct {
	DiscoverWorkloadPath bool  // add unix:path and unix:sha256 selectors
	WorkloadSizeLimit    int64 // largest binary hashed for unix:sha256; 0: no limit, negative: never hash
}

// TPMNodeAttestor is the server's NodeAttestor "tpm".
type TPMNodeAttestor struct {
	EKCAPath   string // PEM bundle of manufacturer CAs (roots and intermediates)
	Enrollment string // ek_cert (default), enrolled, either or both
	PCRs       []int  // PCRs quoted in every active bank; default 0-7
	// MeasuredBoot, when set, makes the event log part of the evidence.
	MeasuredBoot *MeasuredBoot
}

// MeasuredBoot is the measured_boot block of the server's NodeAttestor
// "tpm": the agent's event log is replayed against its quote and the boot
// it describes must pass Policy. There is no accept-all default: the block
// needs a policy file and the name of a policy in it.
type MeasuredBoot struct {
	PolicyFile string
	Policies   []verify.Policy // every policy in the file, each adding tpm:policy:<name> when it passes
	Policy     string          // the one that must pass
	// Audit records a failing required policy without refusing the node.
	Audit bool
	// ReattestInterval is how often a node must prove its boot again; its
	// agent SVID lives at most twice as long (it renews, and re-attests, at
	// half life). 0: at every agent-SVID renewal.
	ReattestInterval time.Duration
}

// AgentTPMNodeAttestor is the agent's NodeAttestor "tpm": exactly one of
// DevicePath, SWTPMSocket and Simulator says which TPM to use.
type AgentTPMNodeAttestor struct {
	DevicePath  string // default /dev/tpmrm0
	SWTPMSocket string // swtpm's data channel (unix socket)
	Simulator   string // state file of the in-process simulator: development only
	AKAlg       string // ecc-p256 (default) or rsa-2048
	// EventLogPath is the TCG event log sent for measured boot: by default
	// /sys/kernel/security/tpm0/binary_bios_measurements with a device, none
	// with swtpm. With the simulator, the log is also extended into the
	// simulated TPM when it starts, so its PCRs match (development only).
	EventLogPath string
}

// TPMKeyManager is the agent's KeyManager "tpm": the agent key lives in the
// TPM of NodeAttestor "tpm"; its wrapped blobs are kept in Directory.
type TPMKeyManager struct {
	Directory string
}

// PKCS11 says how to reach a PKCS#11 token. The PIN is never written in the
// configuration: it is read from PINFile or the environment variable PINEnv.
type PKCS11 struct {
	ModulePath string // e.g. /usr/lib/softhsm/libsofthsm2.so
	TokenLabel string
	PINFile    string
	PINEnv     string
}

// PKCS11KeyManager is the server's KeyManager "pkcs11": CA keys generated
// and kept in a PKCS#11 token.
type PKCS11KeyManager struct {
	PKCS11
	KeyPrefix string // optional namespace for the key labels
}

// AWSKMSKeyManager is the server's KeyManager "aws_kms". Credentials come
// from the standard AWS chain (environment, shared config, instance role).
type AWSKMSKeyManager struct {
	Region      string
	Endpoint    string // endpoint override (VPC endpoint)
	AliasPrefix string // default alias/plinth/<trust domain>/
	ServerID    string // tags the keys this server creates; default the host name
}

// PKCS11UpstreamAuthority is the server's UpstreamAuthority "pkcs11": the
// corporate CA's key is in a PKCS#11 token, its certificate in a file.
type PKCS11UpstreamAuthority struct {
	PKCS11
	KeyLabel       string
	CertFilePath   string
	BundleFilePath string
}

// AWSIIDNodeAttestor is the server's NodeAttestor "aws_iid".
type AWSIIDNodeAttestor struct {
	Accounts, Regions  []string // account_id_allow_list, region_allow_list; empty = any
	MaxInstanceAge     time.Duration
	AllowReattestation bool
	ExtraCertFiles     []string // PEM files of more AWS (or test) certificates to trust
	// EC2Lookup queries EC2 (and IAM) for tag, security group, IAM role,
	// subnet and VPC selectors, with these credentials and endpoints.
	EC2Lookup                             bool
	AccessKeyID, SecretAccessKey          string
	AssumeRole, Partition                 string
	EC2Endpoint, IAMEndpoint, STSEndpoint string
	SkipBlockDevice                       bool
	DisableInstanceProfileSelectors       bool
}

// AgentAWSIIDNodeAttestor is the agent's NodeAttestor "aws_iid".
type AgentAWSIIDNodeAttestor struct {
	MetadataEndpoint string // ec2_metadata_endpoint, default http://169.254.169.254
}

// GCPIITNodeAttestor is the server's NodeAttestor "gcp_iit".
type GCPIITNodeAttestor struct {
	ProjectIDs         []string // projectid_allow_list: required (Google signs for every VM on GCP)
	Audience           string
	JWKSURL, JWKSFile  string // default: Google's published keys
	MaxAge             time.Duration
	AllowReattestation bool
}

// AgentGCPIITNodeAttestor is the agent's NodeAttestor "gcp_iit".
type AgentGCPIITNodeAttestor struct {
	IdentityTokenHost string // default metadata.google.internal
	ServiceAccount    string
	Audience          string
}

// AzureTenant is one tenant the server's azure_msi accepts.
type AzureTenant struct {
	Resource          string
	JWKSURL, JWKSFile string // default: the tenant's published keys
}

// AzureMSINodeAttestor is the server's NodeAttestor "azure_msi".
type AzureMSINodeAttestor struct {
	Tenants            map[string]AzureTenant // required: tenant ID -> settings
	Resource           string
	AllowReattestation bool
}

// AgentAzureMSINodeAttestor is the agent's NodeAttestor "azure_msi".
type AgentAzureMSINodeAttestor struct {
	Resource    string
	ClientID    string
	MetadataURL string
}

// DiskUpstreamAuthority is the server's UpstreamAuthority "disk": a
// corporate CA whose certificate and key are files. It signs the server's
// CA, so the trust bundle is the corporate root.
type DiskUpstreamAuthority struct {
	CertFilePath   string // the upstream CA certificate (PEM), and intermediates after it
	KeyFilePath    string // its private key (PEM)
	BundleFilePath string // the roots (PEM); default: the certificate itself, when self-signed
}

// settingsFunc decodes a plugin's plugin_data block into its settings type.
// It reports problems through the block and returns the settings anyway.
type settingsFunc func(data *block) any

// count says how many plugins of a kind must be enabled.
type count int

const (
	exactlyOne count = iota
	oneOrMore
	atMostOne
)

// pluginKind is one kind of plugin a process takes, and the names it knows.
type pluginKind struct {
	count count
	names map[string]settingsFunc
}

// serverPlugins is every plugin plinth-server knows. To add one, write its
// settings type and a settingsFunc, and add a row.
var serverPlugins = map[string]pluginKind{
	"DataStore": {exactlyOne, map[string]settingsFunc{
		"sql": decodeSQLDataStore,
	}},
	"KeyManager": {exactlyOne, map[string]settingsFunc{
		"disk":   decodeDiskKeyManager,
		"memory": func(*block) any { return MemoryKeyManager{} },
		"pkcs11": func(b *block) any {
			return PKCS11KeyManager{PKCS11: decodePKCS11(b), KeyPrefix: b.string("key_prefix", "")}
		},
		"aws_kms": decodeAWSKMS,
	}},
	"NodeAttestor": {oneOrMore, map[string]settingsFunc{
		"join_token": func(*block) any { return JoinTokenNodeAttestor{} },
		"tpm":        decodeTPMNodeAttestor,
		"gcp_iit":    decodeGCPIIT,
		"azure_msi":  decodeAzureMSI,
		"aws_iid":    decodeAWSIID,
	}},
	"UpstreamAuthority": {atMostOne, map[string]settingsFunc{
		"pkcs11": func(b *block) any {
			return PKCS11UpstreamAuthority{PKCS11: decodePKCS11(b), KeyLabel: b.requiredString("key_label"), CertFilePath: b.requiredString("cert_file_path"), BundleFilePath: b.string("bundle_file_path", "")}
		},
		"disk": func(b *block) any {
			return DiskUpstreamAuthority{CertFilePath: b.requiredString("cert_file_path"), KeyFilePath: b.requiredString("key_file_path"), BundleFilePath: b.string("bundle_file_path", "")}
		},
	}},
}

// agentPlugins is every plugin plinth-agent knows; see serverPlugins.
var agentPlugins = map[string]pluginKind{
	"NodeAttestor": {oneOrMore, map[string]settingsFunc{
		"join_token": func(*block) any { return JoinTokenNodeAttestor{} },
		"tpm":        decodeAgentTPMNodeAttestor,
		"aws_iid": func(b *block) any {
			return AgentAWSIIDNodeAttestor{MetadataEndpoint: b.string("ec2_metadata_endpoint", "")}
		},
		"gcp_iit": func(b *block) any {
			return AgentGCPIITNodeAttestor{IdentityTokenHost: b.string("identity_token_host", ""), ServiceAccount: b.string("service_account", ""), Audience: b.string("audience", "")}
		},
		"azure_msi": func(b *block) any {
			return AgentAzureMSINodeAttestor{Resource: b.string("resource_id", ""), ClientID: b.string("client_id", ""), MetadataURL: b.string("metadata_url", "")}
		},
	}},
	"KeyManager": {exactlyOne, map[string]settingsFunc{
		"disk":   decodeAgentDiskKeyManager,
		"memory": func(*block) any { return MemoryKeyManager{} },
		"tpm":    func(b *block) any { return TPMKeyManager{Directory: b.requiredString("directory")} },
	}},
	"WorkloadAttestor": {oneOrMore, map[string]settingsFunc{
		"unix": decodeUnixWorkloadAttestor,
	}},
}

func decodeSQLDataStore(b *block) any {
	s := SQLDataStore{ConnectionString: b.requiredString("connection_string")}
	if t, pos, ok := b.required("database_type"); ok {
		if t == "sqlite3" {
			s.DatabaseType = t
		} else {
			b.d.errorf(pos, `database_type: %q is not supported; use "sqlite3" (postgres support comes later)`, t)
		}
	}
	return s
}

func decodeTPMNodeAttestor(b *block) any {
	s := TPMNodeAttestor{EKCAPath: b.string("ek_ca_path", ""), Enrollment: "ek_cert", PCRs: []int{0, 1, 2, 3, 4, 5, 6, 7}}
	if m, pos, ok := b.str("enrollment"); ok {
		switch m {
		case "ek_cert", "enrolled", "either", "both":
			s.Enrollment = m
		default:
			b.d.errorf(pos, "enrollment: %q is not a mode; want ek_cert, enrolled, either or both", m)
		}
	}
	if s.Enrollment != "enrolled" && s.EKCAPath == "" {
		b.d.errorf(b.pos, "enrollment %q trusts EK certificates, so ek_ca_path is required (a PEM bundle of TPM manufacturer CAs); or set enrollment = \"enrolled\"", s.Enrollment)
	}
	if pcrs, pos := b.intList("pcrs"); pos != nil {
		s.PCRs = nil
		for i, p := range pcrs {
			if p < 0 || p > 23 {
				b.d.errorf(pos[i], "pcrs: PCR %d is out of range (0-23)", p)
				continue
			}
			s.PCRs = append(s.PCRs, int(p))
		}
	}
	if b.has("measured_boot") {
		s.MeasuredBoot = decodeMeasuredBoot(b.object("measured_boot", "measured_boot block"))
	}
	return s
}

func decodeMeasuredBoot(b *block) *MeasuredBoot {
	defer b.end()
	m := &MeasuredBoot{ReattestInterval: b.duration("reattestation_interval", 0)}
	if mode, pos, ok := b.str("mode"); ok {
		switch mode {
		case "enforce":
		case "audit":
			m.Audit = true
		default:
			b.d.errorf(pos, "mode: %q is not a mode; want enforce or audit", mode)
		}
	}
	file, filePos, fileOK := b.str("policy_file")
	name, namePos, nameOK := b.str("policy")
	if !fileOK || file == "" || !nameOK || name == "" {
		b.d.errorf(b.pos, "measured boot needs a policy: set policy_file and policy (the name of the policy every node must pass); there is no accept-all default")
		return m
	}
	m.PolicyFile, m.Policy = file, name
	policies, err := LoadBootPolicies(file)
	if err != nil {
		b.d.errorf(filePos, "policy_file: %v", err)
		return m
	}
	m.Policies = policies
	if !slices.ContainsFunc(policies, func(p verify.Policy) bool { return p.Name == name }) {
		var names []string
		for _, p := range policies {
			names = append(names, p.Name)
		}
		b.d.errorf(namePos, "policy: %s has no policy %q (it has %s)", file, name, strings.Join(names, ", "))
	}
	return m
}

func decodeAgentTPMNodeAttestor(b *block) any {
	s := AgentTPMNodeAttestor{DevicePath: b.string("device_path", ""), SWTPMSocket: b.string("swtpm_socket", ""), Simulator: b.string("simulator", ""), AKAlg: "ecc-p256"}
	n := 0
	for _, v := range []string{s.DevicePath, s.SWTPMSocket, s.Simulator} {
		if v != "" {
			n++
		}
	}
	if n > 1 {
		b.d.errorf(b.pos, "set only one of device_path, swtpm_socket and simulator")
	}
	if n == 0 {
		s.DevicePath = "/dev/tpmrm0"
	}
	s.EventLogPath = b.string("event_log_path", "")
	if s.DevicePath != "" && s.EventLogPath == "" {
		s.EventLogPath = "/sys/kernel/security/tpm0/binary_bios_measurements"
	}
	if a, pos, ok := b.str("ak_alg"); ok {
		switch a {
		case "ecc-p256", "rsa-2048":
			s.AKAlg = a
		default:
			b.d.errorf(pos, "ak_alg: %q is not supported; want ecc-p256 or rsa-2048", a)
		}
	}
	return s
}

func decodePKCS11(b *block) PKCS11 {
	p := PKCS11{ModulePath: b.requiredString("module_path"), TokenLabel: b.requiredString("token_label"), PINFile: b.string("pin_file", ""), PINEnv: b.string("pin_env", "")}
	if pin, pos, ok := b.str("pin"); ok && pin != "" {
		b.d.errorf(pos, "pin: a PIN is never written in the configuration; put it in a file (pin_file) or an environment variable (pin_env)")
	}
	if (p.PINFile == "") == (p.PINEnv == "") {
		b.d.errorf(b.pos, "set exactly one of pin_file and pin_env")
	}
	return p
}

func decodeAWSKMS(b *block) any {
	return AWSKMSKeyManager{Region: b.requiredString("region"), Endpoint: b.string("endpoint", ""), AliasPrefix: b.string("alias_prefix", ""), ServerID: b.string("server_id", "")}
}

func decodeAWSIID(b *block) any {
	s := AWSIIDNodeAttestor{MaxInstanceAge: b.duration("max_instance_age", 0), AllowReattestation: b.boolean("allow_reattestation", false),
		EC2Lookup: b.boolean("ec2_lookup", false), AccessKeyID: b.string("access_key_id", ""), SecretAccessKey: b.string("secret_access_key", ""),
		AssumeRole: b.string("assume_role", ""), Partition: b.string("partition", ""),
		EC2Endpoint: b.string("ec2_endpoint", ""), IAMEndpoint: b.string("iam_endpoint", ""), STSEndpoint: b.string("sts_endpoint", ""),
		SkipBlockDevice: b.boolean("skip_block_device", false), DisableInstanceProfileSelectors: b.boolean("disable_instance_profile_selectors", false)}
	s.Accounts, _ = b.stringList("account_id_allow_list")
	s.Regions, _ = b.stringList("region_allow_list")
	s.ExtraCertFiles, _ = b.stringList("extra_cert_files")
	return s
}

func decodeGCPIIT(b *block) any {
	s := GCPIITNodeAttestor{Audience: b.string("audience", ""), JWKSURL: b.string("jwks_url", ""), JWKSFile: b.string("jwks_file", ""),
		MaxAge: b.duration("max_age", 0), AllowReattestation: b.boolean("allow_reattestation", false)}
	s.ProjectIDs, _ = b.stringList("projectid_allow_list")
	if len(s.ProjectIDs) == 0 {
		b.d.errorf(b.pos, "projectid_allow_list is required: Google signs identity tokens for every VM on GCP, so without it any GCP VM could attest")
	}
	return s
}

func decodeAzureMSI(b *block) any {
	s := AzureMSINodeAttestor{Resource: b.string("resource_id", ""), AllowReattestation: b.boolean("allow_reattestation", false), Tenants: map[string]AzureTenant{}}
	for id, t := range b.objects("tenants", "tenants block") {
		s.Tenants[id] = AzureTenant{Resource: t.string("resource_id", ""), JWKSURL: t.string("jwks_url", ""), JWKSFile: t.string("jwks_file", "")}
		t.end()
	}
	if len(s.Tenants) == 0 {
		b.d.errorf(b.pos, `tenants is required: list the Azure AD tenants (by ID) whose VMs may attest, as tenants { "<tenant id>" {} }`)
	}
	return s
}

func decodeDiskKeyManager(b *block) any {
	return DiskKeyManager{KeysPath: b.requiredString("keys_path")}
}

func decodeAgentDiskKeyManager(b *block) any {
	return AgentDiskKeyManager{Directory: b.requiredString("directory")}
}

func decodeUnixWorkloadAttestor(b *block) any {
	return UnixWorkloadAttestor{
		DiscoverWorkloadPath: b.boolean("discover_workload_path", false),
		WorkloadSizeLimit:    b.integer("workload_size_limit", 0),
	}
}

// decodePlugins decodes the plugins block against the kinds a process
// takes, and returns the enabled plugins of each kind in file order.
func decodePlugins(top *block, kinds map[string]pluginKind) map[string][]Plugin {
	pb := top.requiredObject("plugins", "plugins block")
	found := map[string][]Plugin{}
	seen := map[string][]*ast.ObjectItem{} // by kind: every enabled block, known name or not
	for _, it := range pb.items {
		p, ok := decodePlugin(pb.d, it, kinds)
		if !ok {
			continue
		}
		pos := it.Keys[0].Pos()
		if i := slices.IndexFunc(seen[p.Kind], func(s *ast.ObjectItem) bool { return keyText(s.Keys[1]) == p.Name }); i >= 0 {
			pb.d.errorf(pos, "duplicate %s %q (first on line %d)", p.Kind, p.Name, seen[p.Kind][i].Keys[0].Pos().Line)
			continue
		}
		seen[p.Kind] = append(seen[p.Kind], it)
		if p.Settings != nil {
			found[p.Kind] = append(found[p.Kind], p)
		}
	}
	if pb.quiet {
		return found // the plugins block is missing or malformed, and that was reported
	}

	for _, kind := range slices.Sorted(maps.Keys(kinds)) {
		k, s := kinds[kind], seen[kind]
		names := strings.Join(slices.Sorted(maps.Keys(k.names)), ", ")
		switch {
		case len(s) == 0 && k.count == exactlyOne:
			pb.d.errorf(pb.pos, "missing %s plugin (want exactly one of: %s)", kind, names)
		case len(s) == 0 && k.count == oneOrMore:
			pb.d.errorf(pb.pos, "missing %s plugin (want at least one of: %s)", kind, names)
		case len(s) > 1 && k.count != oneOrMore:
			for _, it := range s[1:] {
				pb.d.errorf(it.Keys[0].Pos(), "more than one %s: %q (line %d) and %q; keep one",
					kind, keyText(s[0].Keys[1]), s[0].Keys[0].Pos().Line, keyText(it.Keys[1]))
			}
		}
	}
	return found
}

// decodePlugin decodes one block of the plugins section, written
// `Kind "name" { … }`. The block may hold plugin_data (the plugin's
// settings) and enabled = false (skip the block entirely, as SPIRE does).
// SPIRE's external-plugin keys are reported: Plinth has built-in plugins
// only.
//
// ok is false when the block is disabled or is not a plugin of a known kind
// (reported). Settings is nil when the plugin's name is unknown (reported).
func decodePlugin(d *decoder, it *ast.ObjectItem, kinds map[string]pluginKind) (p Plugin, ok bool) {
	p.Kind = keyText(it.Keys[0])
	pos := it.Keys[0].Pos()
	if len(it.Keys) > 1 {
		p.Name = keyText(it.Keys[1])
	}
	body := &block{d: d, where: fmt.Sprintf("%s %q", p.Kind, p.Name), pos: pos, present: true}
	ot, isBlock := it.Val.(*ast.ObjectType)
	if isBlock && ot.List != nil {
		body.items = ot.List.Items
	}
	if isBlock && !body.boolean("enabled", true) {
		return p, false // not looked at, whatever it holds
	}

	k, ok := kinds[p.Kind]
	if !ok {
		known := slices.Sorted(maps.Keys(kinds))
		if s := suggest(p.Kind, known); s != "" {
			d.errorf(pos, "unknown plugin type %q%s", p.Kind, s)
		} else {
			d.errorf(pos, "unknown plugin type %q (Plinth knows %s)", p.Kind, strings.Join(known, ", "))
		}
		return p, false
	}
	if len(it.Keys) != 2 || !isBlock {
		d.errorf(pos, `%s: want %s "name" { plugin_data { … } }`, p.Kind, p.Kind)
		return p, false
	}

	for _, key := range []string{"plugin_cmd", "plugin_checksum", "plugin_args"} {
		if it := body.lookup(key); it != nil {
			d.errorf(it.Keys[0].Pos(), "external plugins are not supported by Plinth; remove %s", key)
		}
	}
	if it := body.lookup("plugin_data_file"); it != nil {
		d.errorf(it.Keys[0].Pos(), "plugin_data_file is not supported by Plinth; write the settings in plugin_data")
	}
	data := body.object("plugin_data", fmt.Sprintf("plugin_data of %s %q", p.Kind, p.Name))
	body.end()

	decode, ok := k.names[p.Name]
	if !ok {
		d.errorf(it.Keys[1].Pos(), "unknown %s %q (Plinth knows %s)", p.Kind, p.Name,
			strings.Join(slices.Sorted(maps.Keys(k.names)), ", "))
		return p, true
	}
	p.Settings = decode(data)
	data.end()
	return p, true
}

// first returns the first plugin of ps, or the zero Plugin when a
// configuration error left none.
func first(ps []Plugin) Plugin {
	if len(ps) == 0 {
		return Plugin{}
	}
	return ps[0]
}
