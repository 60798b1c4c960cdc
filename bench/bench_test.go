// Package bench measures Plinth against the targets of its issues, with the
// real binaries where the figure is end to end. Timings on a shared machine
// are noisy, so signing speed is reported as a ratio to raw crypto/ecdsa
// measured in the same run. `make bench` runs it and prints one table with
// each figure beside its target.
package bench

import (
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plinth-id/plinth/test/harness"
)

var bin string

func TestMain(m *testing.M) {
	flag.Parse()
	if flag.Lookup("test.bench").Value.String() == "" {
		os.Exit(m.Run()) // `go test ./...` without -bench: nothing to build
	}
	dir, err := os.MkdirTemp("", "plinth-bench-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = dir
	if err := harness.Build(bin); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	printTable()
	os.Exit(code)
}

// row is one figure of the final table.
type row struct {
	name, value, target string
	ok                  bool
}

var (
	mu    sync.Mutex
	table []row
)

func record(name, value, target string, ok bool) {
	mu.Lock()
	defer mu.Unlock()
	table = append(table, row{name, value, target, ok})
}

func printTable() {
	if len(table) == 0 {
		return
	}
	w := 0
	for _, r := range table {
		w = max(w, len(r.name))
	}
	fmt.Printf("\n%-*s  %-28s  %-36s  %s\n", w, "figure", "measured", "target", "")
	fmt.Println(strings.Repeat("-", w+76))
	for _, r := range table {
		mark := "ok"
		if !r.ok {
			mark = "MISSED"
		}
		fmt.Printf("%-*s  %-28s  %-36s  %s\n", w, r.name, r.value, r.target, mark)
	}
}

// percentile returns the p-th percentile (0..100) of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

func mb(b uint64) string { return fmt.Sprintf("%.1f MB", float64(b)/(1<<20)) }
