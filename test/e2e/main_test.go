package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// bin holds the paths of the binaries TestMain built.
var bin struct {
	server, agent, workload string
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "plinth-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := build(dir); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	return m.Run()
}

// build compiles the two Plinth binaries and the helper workload into dir.
// Paths are relative to this package's directory, where go test runs us.
func build(dir string) error {
	cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator),
		"../../cmd/plinth-server", "../../cmd/plinth-agent", "./testdata/workload")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build: %w", err)
	}
	bin.server = filepath.Join(dir, "plinth-server")
	bin.agent = filepath.Join(dir, "plinth-agent")
	// The agent sees the helper by the path the kernel reports, which has
	// no symlinks.
	w, err := filepath.EvalSymlinks(filepath.Join(dir, "workload"))
	if err != nil {
		return err
	}
	bin.workload = w
	return nil
}
