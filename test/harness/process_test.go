package harness

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestProcessWaitOutputAndExit(t *testing.T) {
	p := Start(t, "sh", "/bin/sh", "-c", `echo "ready at 42"; echo oops >&2; exit 3`)
	if got := p.WaitOutput(t, "ready at ", 5*time.Second); got != "42" {
		t.Errorf("WaitOutput = %q, want %q", got, "42")
	}
	if code := p.WaitExit(t, 5*time.Second); code != 3 {
		t.Errorf("WaitExit = %d, want 3", code)
	}
	if p.Running() {
		t.Error("Running after exit")
	}
	if got := p.Output(); !strings.Contains(got, "oops") {
		t.Errorf("Output %q misses stderr", got)
	}
}

func TestProcessStop(t *testing.T) {
	// The shell exits 0 on SIGTERM, as every Plinth binary does.
	p := Start(t, "sh", "/bin/sh", "-c", `trap 'exit 0' TERM; echo up; while :; do sleep 0.05; done`)
	p.WaitOutput(t, "up", 5*time.Second)
	p.MustStop(t)
	if p.Running() {
		t.Error("Running after MustStop")
	}
	if err := p.Stop(); err != nil {
		t.Errorf("Stop after exit = %v, want nil", err)
	}
}

func TestEventually(t *testing.T) {
	calls := 0
	if err := Eventually(5*time.Second, func() error {
		if calls++; calls < 3 {
			return errors.New("not yet")
		}
		return nil
	}); err != nil || calls != 3 {
		t.Errorf("Eventually = %v after %d calls, want nil after 3", err, calls)
	}

	final := errors.New("cannot succeed")
	calls = 0
	err := Eventually(5*time.Second, func() error { calls++; return errStop{final} })
	if err != final || calls != 1 {
		t.Errorf("Eventually = %v after %d calls, want %v after 1", err, calls, final)
	}

	err = Eventually(100*time.Millisecond, func() error { return errors.New("never") })
	if want := "after 100ms: never"; err == nil || err.Error() != want {
		t.Errorf("Eventually = %v, want %q", err, want)
	}
}

func TestHeapWithoutListener(t *testing.T) {
	p := Start(t, "sh", "/bin/sh", "-c", "exit 0")
	p.WaitExit(t, 5*time.Second)
	if _, err := p.Heap(t.Context()); err == nil || err.Error() != "harness: sh has no health listener" {
		t.Errorf("Heap = %v, want the no-listener error", err)
	}
}
