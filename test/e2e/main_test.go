package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/plinth-id/plinth/test/harness"
)

// bin holds what TestMain built: the directory of the Plinth binaries and
// the path of the helper workload.
var bin struct {
	dir, workload string
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
// The helper's path is relative to this package's directory, where go test
// runs us.
func build(dir string) error {
	if err := harness.Build(dir, "./testdata/workload"); err != nil {
		return err
	}
	bin.dir = dir
	// The agent sees the helper by the path the kernel reports, which has
	// no symlinks.
	w, err := filepath.EvalSymlinks(filepath.Join(dir, "workload"))
	if err != nil {
		return err
	}
	bin.workload = w
	return nil
}
