// Package importrules enforces the import rules of DESIGN.md with
// `go list`: the server never links the agent, the TPM device code, the
// simulator or a concrete backend; the agent never links the server; the
// contract packages (hsm, attestors) are leaves; only the composition roots
// (cmd/*) name concrete implementations.
package importrules

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/plinth-id/plinth"

type pkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json=ImportPath,Imports,Deps", module+"/...")
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatalf("go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

func rel(path string) string { return strings.TrimPrefix(strings.TrimPrefix(path, module), "/") }

func under(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }

// concrete reports whether p is a concrete implementation of a contract.
func concrete(p string) bool {
	for _, root := range []string{"hsm", "attestors"} {
		if strings.HasPrefix(p, root+"/") && !strings.Contains(p, "internal") && !strings.HasSuffix(p, "test") {
			return true
		}
	}
	return false
}

// composition reports whether p may name concrete implementations.
func composition(p string) bool {
	for _, d := range []string{"cmd", "demo", "bench", "test"} {
		if under(p, d) {
			return true
		}
	}
	return false
}

func TestImportRules(t *testing.T) {
	pkgs := listPackages(t)
	if len(pkgs) < 10 {
		t.Fatalf("go list found only %d packages", len(pkgs))
	}
	for _, p := range pkgs {
		name := rel(p.ImportPath)
		for _, d := range p.Deps {
			if !strings.HasPrefix(d, module) {
				continue
			}
			dep := rel(d)
			switch {
			case under(name, "server") && (under(dep, "agent") || under(dep, "simulator") || (under(dep, "tpm") && !under(dep, "tpm/verify"))):
				t.Errorf("%s links %s: the server must not link the agent, the TPM device code or the simulator", name, dep)
			case under(name, "server") && concrete(dep):
				t.Errorf("%s links %s: the server takes implementations through their contracts", name, dep)
			case under(name, "agent") && under(dep, "server"):
				t.Errorf("%s links %s: the agent must not link the server", name, dep)
			case name == "hsm" || name == "attestors":
				t.Errorf("%s imports %s: contract packages are leaves", name, dep)
			case name == "cmd/plinth-server" && (under(dep, "simulator") || (under(dep, "tpm") && !under(dep, "tpm/verify"))):
				t.Errorf("%s links %s: the server binary links only the pure TPM verifier", name, dep)
			}
		}
		for _, imp := range p.Imports {
			dep := rel(imp)
			if !strings.HasPrefix(imp, module) || !concrete(dep) || composition(name) {
				continue
			}
			// An implementation may use its own subpackages.
			if strings.HasPrefix(dep, name+"/") || strings.HasPrefix(name, dep+"/") {
				continue
			}
			t.Errorf("%s imports %s: only cmd/* names concrete implementations", name, dep)
		}
	}
}
