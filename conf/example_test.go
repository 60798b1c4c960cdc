package conf_test

import (
	"errors"
	"fmt"

	"github.com/plinth-id/plinth/conf"
)

func ExampleParseServer() {
	src := []byte(`server {
    trust_domain = "example.org"
    data_dir = "./.data"
    ca_ttl = "1d"
    bind_prot = 8081
}
plugins {
    DataStore "sql" { plugin_data { database_type = "sqlite3" connection_string = "./.data/datastore.sqlite3" } }
    KeyManager "disk" { plugin_data { keys_path = "./.data/keys.json" } }
    NodeAttestor "k8s_psat" { plugin_data {} }
}
`)
	_, err := conf.ParseServer("server.conf", src)
	fmt.Println(err)

	var errs *conf.Errors
	if errors.As(err, &errs) {
		fmt.Println(len(errs.List), "problems, the first on line", errs.List[0].Pos.Line)
	}
	// Output:
	// server.conf:4: ca_ttl: "1d" is not a duration (write it like "24h", "90m" or "30s")
	// server.conf:5: unknown key "bind_prot" in server block (did you mean "bind_port"?)
	// server.conf:10: unknown NodeAttestor "k8s_psat" (Plinth knows aws_iid, azure_msi, gcp_iit, join_token, tpm)
	// 3 problems, the first on line 4
}

func ExampleLoadServer() {
	cfg, err := conf.LoadServer("examples/server.conf", false)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(cfg.TrustDomain, cfg.BindPort, cfg.CATTL)
	switch s := cfg.KeyManager.Settings.(type) {
	case conf.DiskKeyManager:
		fmt.Println("disk keys at", s.KeysPath)
	case conf.MemoryKeyManager:
		fmt.Println("keys in memory")
	}
	// Output:
	// example.org 8081 24h0m0s
	// disk keys at ./.data/keys.json
}
