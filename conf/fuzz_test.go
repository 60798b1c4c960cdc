package conf

import (
	"errors"
	"os"
	"testing"
)

// FuzzParseServer checks that no input makes the decoder panic, and that
// every failure is an *Errors with at least one positioned problem.
func FuzzParseServer(f *testing.F) {
	addSeeds(f, "examples/server.conf")
	f.Add([]byte(okServerBlock + okServerPlugins))
	f.Add([]byte("server { bind_port = 99999999999999999999 ca_ttl = 1.5e3 admin_ids = [[1], {a = 1}] }"))
	f.Add([]byte("server {\n data_dir = <<-EOT\n    x\n  EOT\n}\n"))
	f.Add([]byte(`plugins { "KeyManager" "disk" { plugin_data { keys_path = "\u00e9" } } KeyManager "x" "y" {} }`))
	f.Fuzz(func(t *testing.T, src []byte) {
		s, err := ParseServer("f.conf", src)
		checkResult(t, s != nil, err)
	})
}

// FuzzParseAgent is FuzzParseServer for agent configurations.
func FuzzParseAgent(f *testing.F) {
	addSeeds(f, "examples/agent.conf")
	f.Add([]byte(okAgentBlock + okAgentPlugins))
	f.Add([]byte("agent { experimental { sync_interval = \"1s\" } sync_interval = [] }"))
	f.Fuzz(func(t *testing.T, src []byte) {
		a, err := ParseAgent("f.conf", src)
		checkResult(t, a != nil, err)
	})
}

func addSeeds(f *testing.F, paths ...string) {
	for _, p := range paths {
		src, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(src)
	}
}

func checkResult(t *testing.T, gotConfig bool, err error) {
	t.Helper()
	if err == nil {
		if !gotConfig {
			t.Fatal("no config and no error")
		}
		return
	}
	var errs *Errors
	if !errors.As(err, &errs) || len(errs.List) == 0 {
		t.Fatalf("got %v (%T), want a non-empty *Errors", err, err)
	}
	if gotConfig {
		t.Fatal("got a config and an error")
	}
	for _, e := range errs.List {
		if e.Pos.File != "f.conf" || e.Pos.Line < 1 {
			t.Fatalf("bad position in %q", e)
		}
	}
}
