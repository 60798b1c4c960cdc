package conf

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/hcl/ast"
	"github.com/hashicorp/hcl/hcl/token"
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

// settingsFunc decodes a plugin's plugin_data block into its settings type.
// It reports problems through the block and returns the settings anyway.
type settingsFunc func(data *block) any

// count says how many plugins of a kind must be enabled.
type count int

const (
	exactlyOne count = iota
	oneOrMore
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
	}},
	"NodeAttestor": {oneOrMore, map[string]settingsFunc{
		"join_token": func(*block) any { return JoinTokenNodeAttestor{} },
	}},
}

// agentPlugins is every plugin plinth-agent knows; see serverPlugins.
var agentPlugins = map[string]pluginKind{
	"NodeAttestor": {exactlyOne, map[string]settingsFunc{
		"join_token": func(*block) any { return JoinTokenNodeAttestor{} },
	}},
	"KeyManager": {exactlyOne, map[string]settingsFunc{
		"disk":   decodeAgentDiskKeyManager,
		"memory": func(*block) any { return MemoryKeyManager{} },
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
//
// Each plugin is written `Kind "name" { … }` and may hold plugin_data (the
// plugin's settings) and enabled = false (skip the block entirely, as SPIRE
// does). SPIRE's external-plugin keys are reported: Plinth has built-in
// plugins only.
func decodePlugins(top *block, kinds map[string]pluginKind) map[string][]Plugin {
	pb := top.requiredObject("plugins", "plugins block")
	found := map[string][]Plugin{}
	type seenPlugin struct {
		name string
		pos  token.Pos
	}
	seen := map[string][]seenPlugin{} // by kind: every enabled block, known name or not
	for _, it := range pb.items {
		kind, pos := keyText(it.Keys[0]), it.Keys[0].Pos()
		ot, isBlock := it.Val.(*ast.ObjectType)
		var name string
		if len(it.Keys) > 1 {
			name = keyText(it.Keys[1])
		}
		body := &block{d: pb.d, where: fmt.Sprintf("%s %q", kind, name), pos: pos, present: true}
		if isBlock && ot.List != nil {
			body.items = ot.List.Items
		}
		if isBlock && !body.boolean("enabled", true) {
			continue // as SPIRE: a disabled block is not looked at, whatever it holds
		}
		k, ok := kinds[kind]
		if !ok {
			known := slices.Sorted(maps.Keys(kinds))
			if s := suggest(kind, known); s != "" {
				pb.d.errorf(pos, "unknown plugin type %q%s", kind, s)
			} else {
				pb.d.errorf(pos, "unknown plugin type %q (Plinth knows %s)", kind, strings.Join(known, ", "))
			}
			continue
		}
		if len(it.Keys) != 2 || !isBlock {
			pb.d.errorf(pos, `%s: want %s "name" { plugin_data { … } }`, kind, kind)
			continue
		}
		for _, key := range []string{"plugin_cmd", "plugin_checksum", "plugin_args"} {
			if it := body.lookup(key); it != nil {
				pb.d.errorf(it.Keys[0].Pos(), "external plugins are not supported by Plinth; remove %s", key)
			}
		}
		if it := body.lookup("plugin_data_file"); it != nil {
			pb.d.errorf(it.Keys[0].Pos(), "plugin_data_file is not supported by Plinth; write the settings in plugin_data")
		}
		data := body.object("plugin_data", fmt.Sprintf("plugin_data of %s %q", kind, name))
		body.end()

		if i := slices.IndexFunc(seen[kind], func(p seenPlugin) bool { return p.name == name }); i >= 0 {
			pb.d.errorf(pos, "duplicate %s %q (first on line %d)", kind, name, seen[kind][i].pos.Line)
			continue
		}
		seen[kind] = append(seen[kind], seenPlugin{name, pos})
		decode, ok := k.names[name]
		if !ok {
			pb.d.errorf(it.Keys[1].Pos(), "unknown %s %q (Plinth knows %s)", kind, name,
				strings.Join(slices.Sorted(maps.Keys(k.names)), ", "))
			continue
		}
		settings := decode(data)
		data.end()
		found[kind] = append(found[kind], Plugin{Kind: kind, Name: name, Settings: settings})
	}

	if pb.quiet {
		return found
	}
	for _, kind := range slices.Sorted(maps.Keys(kinds)) {
		k, s := kinds[kind], seen[kind]
		names := strings.Join(slices.Sorted(maps.Keys(k.names)), ", ")
		switch {
		case len(s) == 0 && k.count == exactlyOne:
			pb.d.errorf(pb.pos, "missing %s plugin (want exactly one of: %s)", kind, names)
		case len(s) == 0:
			pb.d.errorf(pb.pos, "missing %s plugin (want at least one of: %s)", kind, names)
		case len(s) > 1 && k.count == exactlyOne:
			for _, p := range s[1:] {
				pb.d.errorf(p.pos, "more than one %s: %q (line %d) and %q; keep one", kind, s[0].name, s[0].pos.Line, p.name)
			}
		}
	}
	return found
}

// first returns the first plugin of ps, or the zero Plugin when a
// configuration error left none.
func first(ps []Plugin) Plugin {
	if len(ps) == 0 {
		return Plugin{}
	}
	return ps[0]
}
