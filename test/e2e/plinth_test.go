package e2e

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plinth-id/plinth/test/harness"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

var (
	// testID is this test process's identity; helperID the helper workload's.
	testID   = spiffeid.RequireFromString("spiffe://example.org/test")
	helperID = spiffeid.RequireFromString("spiffe://example.org/helper")
)

// selfSelectors select this test process: its uid and its binary.
func selfSelectors(t *testing.T) []string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return []string{"unix:uid:" + strconv.Itoa(os.Getuid()), "unix:path:" + exe}
}

// helperSelectors select the helper workload binary run by this user.
func helperSelectors() []string {
	return []string{"unix:uid:" + strconv.Itoa(os.Getuid()), "unix:path:" + bin.workload}
}

// startWorkload runs the helper workload against agent a.
func startWorkload(t *testing.T, a *harness.Agent, name string, args ...string) *harness.Process {
	t.Helper()
	return harness.Start(t, name, bin.workload, append([]string{"-socket", a.Socket}, args...)...)
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

// clientLog is a go-spiffe logger that keeps what the client logs. The
// client logs an error each time a watch breaks, before it reconnects.
type clientLog struct {
	mu     sync.Mutex
	lines  []string
	errors int
}

func (l *clientLog) add(level, format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, time.Now().Format("15:04:05.000")+" "+level+" "+fmt.Sprintf(format, args...))
	if level == "ERROR" {
		l.errors++
	}
}

func (l *clientLog) Debugf(format string, args ...any) { l.add("DEBUG", format, args...) }
func (l *clientLog) Infof(format string, args ...any)  { l.add("INFO", format, args...) }
func (l *clientLog) Warnf(format string, args ...any)  { l.add("WARN", format, args...) }
func (l *clientLog) Errorf(format string, args ...any) { l.add("ERROR", format, args...) }

func (l *clientLog) errorCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.errors
}

func (l *clientLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// x509Update is one X.509 context a watcher received, and when.
type x509Update struct {
	at  time.Time
	ids []string // sorted
}

// x509Watcher records the updates of one Workload API stream.
type x509Watcher struct {
	log     clientLog
	mu      sync.Mutex
	updates []x509Update
	errs    []error
	changed chan struct{}
}

// watchX509 opens one X.509 watch on agent a for the rest of the test.
func watchX509(t *testing.T, a *harness.Agent) *x509Watcher {
	t.Helper()
	w := &x509Watcher{changed: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	client, err := workloadapi.New(ctx, a.Addr(), workloadapi.WithLogger(&w.log))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		client.WatchX509Context(ctx, w)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		client.Close()
		if t.Failed() {
			t.Logf("--- go-spiffe watch client log:\n%s", w.log.String())
		}
	})
	return w
}

func (w *x509Watcher) OnX509ContextUpdate(c *workloadapi.X509Context) {
	u := x509Update{at: time.Now()}
	for _, s := range c.SVIDs {
		u.ids = append(u.ids, s.ID.String())
	}
	slices.Sort(u.ids)
	w.mu.Lock()
	w.updates = append(w.updates, u)
	w.mu.Unlock()
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

func (w *x509Watcher) OnX509ContextWatchError(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.errs = append(w.errs, err)
}

// waitFor returns the first update with exactly the SPIFFE IDs want.
func (w *x509Watcher) waitFor(t *testing.T, timeout time.Duration, want ...spiffeid.ID) x509Update {
	t.Helper()
	var wantIDs []string
	for _, id := range want {
		wantIDs = append(wantIDs, id.String())
	}
	slices.Sort(wantIDs)
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		w.mu.Lock()
		for _, u := range w.updates {
			if slices.Equal(u.ids, wantIDs) {
				w.mu.Unlock()
				return u
			}
		}
		got := slices.Clone(w.updates)
		w.mu.Unlock()
		select {
		case <-w.changed:
		case <-deadline.C:
			t.Fatalf("no X.509 update with %v within %s; updates: %+v", wantIDs, timeout, got)
		}
	}
}
