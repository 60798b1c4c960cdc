package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Build compiles plinth-server, plinth-agent and the further packages pkgs
// (import paths, or paths relative to the working directory as for go
// build) into dir.
func Build(dir string, pkgs ...string) error {
	args := append([]string{"build", "-o", dir + string(filepath.Separator),
		"github.com/plinth-id/plinth/cmd/plinth-server", "github.com/plinth-id/plinth/cmd/plinth-agent"}, pkgs...)
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("harness: go build: %w\n%s", err, out)
	}
	return nil
}

// Process is a child process started by Start. Its stdout and stderr go to
// one buffer, logged if the test fails.
type Process struct {
	Name    string    // for messages, e.g. "plinth-agent (run 2)"
	Started time.Time // just before the process was started
	// HealthPort is the port of its health_checks listener, 0 if it has
	// none.
	HealthPort int

	cmd  *exec.Cmd
	out  syncBuffer
	done chan struct{} // closed once the process has been waited for
	err  error         // Wait's result, set before done is closed
}

// Start starts the binary at path with args. The process gets SIGKILL if
// the test process dies (Pdeathsig), and SIGTERM (then a wait) at cleanup,
// where the test fails unless it exits with status 0.
func Start(tb testing.TB, name, path string, args ...string) *Process {
	tb.Helper()
	p := &Process{Name: name, done: make(chan struct{})}
	p.cmd = exec.Command(path, args...)
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p.cmd.WaitDelay = 5 * time.Second
	p.Started = time.Now()
	if err := p.cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	tb.Cleanup(func() {
		// Every binary here exits 0 on SIGTERM; a process that already
		// exited was waited for by its test, which checked how.
		if p.Running() {
			if err := p.Stop(); err != nil {
				tb.Errorf("%s did not exit cleanly on SIGTERM: %v", name, err)
			}
		}
		if tb.Failed() {
			tb.Logf("--- output of %s (%s %s):\n%s", name, filepath.Base(path), strings.Join(args, " "), p.Output())
		}
	})
	return p
}

// Output returns what the process has printed so far, stdout and stderr
// interleaved.
func (p *Process) Output() string { return p.out.String() }

// Running reports whether the process has not exited yet.
func (p *Process) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Err waits for the process to exit and returns how it did: nil for status
// 0, else an *exec.ExitError or the error of Wait.
func (p *Process) Err() error {
	<-p.done
	return p.err
}

// Stop sends SIGTERM and waits for the process to exit, killing it if it
// does not within 15 s. It returns the exit error (nil for status 0), and
// does nothing but return it if the process had already exited.
func (p *Process) Stop() error {
	if !p.Running() {
		return p.err
	}
	// Our own child, by its PID.
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(15 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
		return errors.New("did not stop within 15s of SIGTERM; killed")
	}
}

// MustStop stops the process and fails the test unless it exits with
// status 0.
func (p *Process) MustStop(tb testing.TB) {
	tb.Helper()
	if err := p.Stop(); err != nil {
		tb.Fatalf("%s did not exit cleanly on SIGTERM: %v", p.Name, err)
	}
}

// WaitExit waits for the process to exit on its own and returns its exit
// code; the test fails if it still runs after timeout.
func (p *Process) WaitExit(tb testing.TB, timeout time.Duration) int {
	tb.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		tb.Fatalf("%s still running after %s", p.Name, timeout)
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		tb.Fatalf("%s: %v", p.Name, p.err)
	}
	return 0
}

// WaitOutput waits until the process prints a line starting with prefix
// and returns the rest of that line.
func (p *Process) WaitOutput(tb testing.TB, prefix string, timeout time.Duration) string {
	tb.Helper()
	var rest string
	err := Eventually(timeout, func() error {
		for _, line := range strings.Split(p.Output(), "\n") {
			if r, ok := strings.CutPrefix(line, prefix); ok {
				rest = r
				return nil
			}
		}
		if !p.Running() {
			return errStop{fmt.Errorf("%s exited (%v) without printing %q", p.Name, p.err, prefix)}
		}
		return fmt.Errorf("%s has not printed %q", p.Name, prefix)
	})
	if err != nil {
		tb.Fatal(err)
	}
	return rest
}

// waitHealthy polls `<its binary> healthcheck -socketPath socket` until it
// passes, failing early if the process exits.
func (p *Process) waitHealthy(tb testing.TB, socket string) {
	tb.Helper()
	start := time.Now()
	err := Eventually(15*time.Second, func() error {
		if !p.Running() {
			return errStop{fmt.Errorf("%s exited before it was healthy: %v", p.Name, p.err)}
		}
		_, stderr, err := Exec(p.cmd.Path, "healthcheck", "-socketPath", socket)
		if err != nil {
			return fmt.Errorf("%s is not healthy: %v: %s", p.Name, err, strings.TrimSpace(stderr))
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Logf("%s healthy after %s", p.Name, time.Since(start).Round(time.Millisecond))
}

// Heap returns the live heap of the process after a garbage collection, in
// bytes, as its health listener's /debug/heap reports it.
func (p *Process) Heap(ctx context.Context) (uint64, error) {
	if p.HealthPort == 0 {
		return 0, fmt.Errorf("harness: %s has no health listener", p.Name)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/debug/heap", p.HealthPort), nil)
	if err != nil {
		return 0, fmt.Errorf("harness: heap of %s: %w", p.Name, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("harness: heap of %s: %w", p.Name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("harness: heap of %s: %s", p.Name, resp.Status)
	}
	var m struct {
		HeapAlloc *uint64 `json:"heap_alloc"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		return 0, fmt.Errorf("harness: heap of %s: %w", p.Name, err)
	}
	if m.HeapAlloc == nil {
		return 0, fmt.Errorf("harness: heap of %s: no heap_alloc in /debug/heap", p.Name)
	}
	return *m.HeapAlloc, nil
}

// Exec runs a short command to completion (at most 20 s) and returns what
// it printed; err is the exit error.
func Exec(path string, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var o, e bytes.Buffer
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stdout, cmd.Stderr = &o, &e
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err = cmd.Run()
	return o.String(), e.String(), err
}

// errStop ends Eventually early: waiting longer cannot help.
type errStop struct{ error }

// Eventually calls f every 50 ms until it returns nil or timeout passes,
// and returns f's last error.
func Eventually(timeout time.Duration, f func() error) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := f()
		var stop errStop
		switch {
		case err == nil:
			return nil
		case errors.As(err, &stop):
			return stop.error
		}
		select {
		case <-deadline.C:
			return fmt.Errorf("after %s: %w", timeout, err)
		case <-tick.C:
		}
	}
}

// tempDir returns a new directory under the system temp dir, short enough
// for unix socket paths (< 108 bytes), removed at cleanup after the
// processes that use it have stopped (cleanups run last-in first-out).
func tempDir(tb testing.TB) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", "plinth")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	if len(dir) > 80 {
		tb.Fatalf("temp dir %s is too long for unix sockets; set TMPDIR=/tmp", dir)
	}
	return dir
}

func writeFile(tb testing.TB, path, content string) {
	tb.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		tb.Fatal(err)
	}
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// syncBuffer is a bytes.Buffer safe for a process's output copier and the
// test reading it at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
