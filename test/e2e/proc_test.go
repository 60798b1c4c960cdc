package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// proc is a child process this test started. Its stdout and stderr go to
// one buffer, logged if the test fails.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  syncBuffer
	done chan struct{} // closed once the process has been waited for
	err  error         // Wait's result, set before done is closed
}

// startProc starts path with args. The process gets SIGKILL if the test
// process dies (Pdeathsig), and SIGTERM (then a wait) in t.Cleanup.
func startProc(t *testing.T, name, path string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, done: make(chan struct{})}
	p.cmd = exec.Command(path, args...)
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p.cmd.WaitDelay = 5 * time.Second
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		// Every binary here exits 0 on SIGTERM; a process that already
		// exited was waited for by its test, which checked how.
		if p.running() {
			if err := p.stop(); err != nil {
				t.Errorf("%s did not exit cleanly on SIGTERM: %v", name, err)
			}
		}
		if t.Failed() {
			t.Logf("--- output of %s (%s %s):\n%s", name, filepath.Base(path), strings.Join(args, " "), p.out.String())
		}
	})
	return p
}

// running reports whether the process has not exited yet.
func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM and waits for the process to exit, killing it if it
// does not within 15 s. It returns the exit error (nil for status 0), and
// does nothing but return it if the process had already exited.
func (p *proc) stop() error {
	if !p.running() {
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
		return fmt.Errorf("did not stop within 15s of SIGTERM; killed")
	}
}

// mustStop stops the process and fails the test unless it exits with status 0.
func (p *proc) mustStop(t *testing.T) {
	t.Helper()
	if err := p.stop(); err != nil {
		t.Fatalf("%s did not exit cleanly on SIGTERM: %v", p.name, err)
	}
}

// waitExit waits for the process to exit on its own and returns its exit
// code; the test fails if it still runs after timeout.
func (p *proc) waitExit(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("%s still running after %s", p.name, timeout)
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		t.Fatalf("%s: %v", p.name, p.err)
	}
	return 0
}

// waitOutput waits until the process prints a line starting with prefix
// and returns the rest of that line.
func (p *proc) waitOutput(t *testing.T, prefix string, timeout time.Duration) string {
	t.Helper()
	var rest string
	err := eventually(timeout, func() error {
		for _, line := range strings.Split(p.out.String(), "\n") {
			if r, ok := strings.CutPrefix(line, prefix); ok {
				rest = r
				return nil
			}
		}
		if !p.running() {
			return errStop{fmt.Errorf("%s exited (%v) without printing %q", p.name, p.err, prefix)}
		}
		return fmt.Errorf("%s has not printed %q", p.name, prefix)
	})
	if err != nil {
		t.Fatal(err)
	}
	return rest
}

// errorLine returns the last "Error: …" line of out: what a plinth binary
// prints when a command fails.
func errorLine(out string) string {
	lines := strings.Split(out, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(lines[i], "Error: ") {
			return lines[i]
		}
	}
	return ""
}

// errStop ends eventually early: waiting longer cannot help.
type errStop struct{ error }

// eventually calls f every 50 ms until it returns nil, returns an errStop,
// or timeout passes; it returns f's last error.
func eventually(timeout time.Duration, f func() error) error {
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

// runCmd runs a short command to completion (at most 20 s) and returns what
// it printed; err is the exit error.
func runCmd(path string, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var o, e bytes.Buffer
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stdout, cmd.Stderr = &o, &e
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err = cmd.Run()
	return o.String(), e.String(), err
}

// shortTempDir returns a new directory under the system temp dir, short
// enough for unix socket paths (< 108 bytes), removed in t.Cleanup after
// the processes that use it have stopped (cleanups run last-in first-out).
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "plinth")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if len(dir) > 80 {
		t.Fatalf("temp dir %s is too long for unix sockets; set TMPDIR=/tmp", dir)
	}
	return dir
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
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
