// Package conf reads the server and agent configuration files: HCL in
// SPIRE's shape, so that a SPIRE server.conf or agent.conf ports with small
// edits.
//
//	server {
//	    trust_domain = "example.org"
//	    data_dir = "./.data"
//	}
//	plugins {
//	    DataStore "sql" { plugin_data { database_type = "sqlite3" connection_string = "./.data/datastore.sqlite3" } }
//	    KeyManager "disk" { plugin_data { keys_path = "./.data/keys.json" } }
//	    NodeAttestor "join_token" { plugin_data {} }
//	}
//
// LoadServer and LoadAgent return typed, validated values (a
// spiffeid.TrustDomain, time.Duration TTLs, an hsm.KeyType, int ports) with
// SPIRE's defaults filled in, or an *Errors listing every problem in the
// file at once, one "file:line: message" each: unknown keys (with a
// suggestion when one is close), wrong types, bad values, missing keys.
// An empty string counts as not set, as in SPIRE.
//
//	cfg, err := conf.LoadServer("server.conf", expandEnv)
//	if err != nil {
//	    return err // prints one line per problem
//	}
//
// Each enabled plugin block becomes a Plugin whose Settings holds the typed
// plugin_data of that plugin (DiskKeyManager, SQLDataStore, …); the
// composition roots in cmd/ switch on it to build the implementation:
//
//	switch s := cfg.KeyManager.Settings.(type) {
//	case conf.DiskKeyManager:
//	    keys, err = disk.New(s.KeysPath)
//	case conf.MemoryKeyManager:
//	    keys = memory.New()
//	}
//
// The plugins each process knows are listed in one table per process
// (serverPlugins, agentPlugins in plugins.go): adding a plugin is a settings
// type, a small decoder, and a row. Plinth has no external plugins;
// plugin_cmd is an error.
//
// The files under examples/ are a runnable server and agent configuration.
package conf
