package unix

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/plinth-id/plinth/attestors"
	"github.com/plinth-id/plinth/procfs"
)

// Name is the attestor's name and the type of every selector it returns.
const Name = "unix"

// Config configures the unix attestor.
type Config struct {
	// DiscoverWorkloadPath adds the path and sha256 selectors (SPIRE's
	// discover_workload_path). The agent must be able to read
	// /proc/PID/exe of workloads, which in practice means running as root.
	DiscoverWorkloadPath bool

	// WorkloadSizeLimit is the largest binary, in bytes, that is hashed
	// for the sha256 selector; a larger one fails attestation. As in
	// SPIRE's workload_size_limit, 0 means no limit and a negative value
	// means never hash (no sha256 selector). A binary is hashed in full on
	// every attestation, so a workload can make the agent do that much work
	// per call.
	WorkloadSizeLimit int64

	// ProcDir is where procfs is mounted; "" means "/proc". It must be an
	// absolute path.
	ProcDir string
}

// Attestor is the unix workload attestor. It is safe for concurrent use.
type Attestor struct {
	c Config

	mu    sync.Mutex
	sums  map[fileKey]string // sha256 by file identity and version
	names nameCache
}

// fileKey identifies one version of a file. The Workload API attests on
// every call, and hashing a large binary each time would cost milliseconds,
// so sums are cached under this key. It is safe: Linux refuses to open a
// running executable for writing (ETXTBSY), and any change made while it is
// not running moves its ctime, which no user can set back.
type fileKey struct {
	dev, ino, size   uint64
	mtimeNs, ctimeNs int64
}

// maxCachedSums bounds the cache; it is cleared when full.
const maxCachedSums = 1024

var _ attestors.WorkloadAttestor = (*Attestor)(nil)

// New returns an attestor for c.
func New(c Config) (*Attestor, error) {
	if c.ProcDir == "" {
		c.ProcDir = "/proc"
	}
	if !filepath.IsAbs(c.ProcDir) {
		return nil, fmt.Errorf("unix: ProcDir %q is not an absolute path", c.ProcDir)
	}
	fi, err := os.Stat(c.ProcDir)
	if err != nil {
		return nil, fmt.Errorf("unix: ProcDir: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("unix: ProcDir %q is not a directory", c.ProcDir)
	}
	return &Attestor{c: c}, nil
}

// Name returns "unix".
func (a *Attestor) Name() string { return Name }

// ErrProcessChanged is wrapped by the error Attest returns when the calling
// process exited, or its PID came to name another process, before
// attestation finished. That error also wraps attestors.ErrRejected.
var ErrProcessChanged = errors.New("process exited or was replaced during attestation")

type processChangedError struct{ pid int32 }

func (e processChangedError) Error() string {
	return fmt.Sprintf("unix: process %d exited or was replaced during attestation", e.pid)
}

func (e processChangedError) Unwrap() []error {
	return []error{ErrProcessChanged, attestors.ErrRejected}
}

// Attest returns the selectors of process c, sorted. c.UID and c.GID are
// taken as given (they come from the kernel); the rest is read from /proc
// and returned only if c.StartTime still matches the process afterwards.
func (a *Attestor) Attest(ctx context.Context, c attestors.Caller) ([]attestors.Selector, error) {
	if c.PID <= 0 {
		return nil, fmt.Errorf("unix: invalid pid %d", c.PID)
	}
	// Check first, so a caller that is already gone costs no hashing.
	if err := a.checkSame(c); err != nil {
		return nil, err
	}

	sel := make([]attestors.Selector, 0, 8)
	add := func(kind, value string) {
		sel = append(sel, attestors.Selector{Type: Name, Value: kind + ":" + value})
	}

	uid := strconv.FormatUint(uint64(c.UID), 10)
	add("uid", uid)
	if name, ok := a.names.lookup("u"+uid, func() (string, error) {
		u, err := user.LookupId(uid)
		if err != nil {
			return "", err
		}
		return u.Username, nil
	}); ok {
		add("user", name)
	}
	gid := strconv.FormatUint(uint64(c.GID), 10)
	add("gid", gid)
	if name, ok := a.groupName(gid); ok {
		add("group", name)
	}

	groups, err := a.supplementaryGroups(c.PID)
	if err != nil {
		return nil, a.readFailed(c, err)
	}
	for _, g := range groups {
		add("supplementary_gid", g)
		if name, ok := a.groupName(g); ok {
			add("supplementary_group", name)
		}
	}

	if a.c.DiscoverWorkloadPath {
		path, sum, err := a.binary(ctx, c.PID)
		if err != nil {
			return nil, a.readFailed(c, err)
		}
		add("path", path)
		if sum != "" {
			add("sha256", sum)
		}
	}

	// Everything above was read from /proc/PID. It describes the caller
	// only if PID still names the process that connected.
	if err := a.checkSame(c); err != nil {
		return nil, err
	}
	return attestors.SortSelectors(sel), nil
}

// checkSame returns a processChangedError unless PID exists and has the
// caller's start time.
func (a *Attestor) checkSame(c attestors.Caller) error {
	start, err := procfs.StartTime(a.c.ProcDir, c.PID)
	if errors.Is(err, procfs.ErrNoProcess) || (err == nil && start != c.StartTime) {
		return processChangedError{c.PID}
	}
	if err != nil {
		return fmt.Errorf("unix: %w", err)
	}
	return nil
}

// readFailed turns an error reading /proc/PID into the error Attest
// returns: a process that went away (or became another) is reported as
// such rather than as the read error it caused.
func (a *Attestor) readFailed(c attestors.Caller, err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
		return processChangedError{c.PID}
	}
	var changed processChangedError
	if errors.As(err, &changed) {
		return err
	}
	if same := a.checkSame(c); same != nil {
		return same
	}
	return err
}

func (a *Attestor) procPath(pid int32, name string) string {
	return filepath.Join(a.c.ProcDir, strconv.FormatInt(int64(pid), 10), name)
}

func (a *Attestor) groupName(gid string) (string, bool) {
	return a.names.lookup("g"+gid, func() (string, error) {
		g, err := user.LookupGroupId(gid)
		if err != nil {
			return "", err
		}
		return g.Name, nil
	})
}

// nameCache remembers user and group names for a few seconds: the Workload
// API attests on every call, and a lookup reads the user database each
// time. A renamed user or group is seen within nameTTL.
type nameCache struct {
	mu    sync.Mutex
	names map[string]cachedName
}

type cachedName struct {
	name    string
	ok      bool
	expires time.Time
}

const nameTTL = 10 * time.Second

func (c *nameCache) lookup(key string, f func() (string, error)) (string, bool) {
	now := time.Now()
	c.mu.Lock()
	n, hit := c.names[key]
	c.mu.Unlock()
	if hit && now.Before(n.expires) {
		return n.name, n.ok
	}
	name, err := f()
	n = cachedName{name: name, ok: err == nil, expires: now.Add(nameTTL)}
	c.mu.Lock()
	if c.names == nil || len(c.names) > 4096 {
		c.names = map[string]cachedName{}
	}
	c.names[key] = n
	c.mu.Unlock()
	return n.name, n.ok
}

// supplementaryGroups returns the GIDs of the "Groups:" line of
// /proc/PID/status, in decimal, in the kernel's order.
func (a *Attestor) supplementaryGroups(pid int32) ([]string, error) {
	b, err := os.ReadFile(a.procPath(pid, "status"))
	if err != nil {
		return nil, fmt.Errorf("unix: supplementary groups of process %d: %w", pid, err)
	}
	for line := range strings.Lines(string(b)) {
		rest, ok := strings.CutPrefix(line, "Groups:")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		for i, f := range fields {
			g, err := strconv.ParseUint(f, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("unix: supplementary groups of process %d: bad gid %q", pid, f)
			}
			fields[i] = strconv.FormatUint(g, 10)
		}
		return fields, nil
	}
	return nil, fmt.Errorf("unix: supplementary groups of process %d: no Groups line in status", pid)
}

// binary returns the path of the binary process pid runs and, unless
// WorkloadSizeLimit is negative, its SHA-256 in hex.
func (a *Attestor) binary(ctx context.Context, pid int32) (path, sum string, err error) {
	exe := a.procPath(pid, "exe")
	if a.c.WorkloadSizeLimit < 0 {
		path, err = os.Readlink(exe)
		if err != nil {
			return "", "", fmt.Errorf("unix: path of process %d: %w", pid, err)
		}
		return path, "", nil
	}

	// Open first: the file stays the one the process ran when opened, even
	// if the process execs or the path is replaced meanwhile.
	f, err := os.Open(exe)
	if err != nil {
		return "", "", fmt.Errorf("unix: binary of process %d: %w", pid, err)
	}
	defer f.Close()
	path, err = os.Readlink(exe)
	if err != nil {
		return "", "", fmt.Errorf("unix: path of process %d: %w", pid, err)
	}
	sum, err = a.hash(ctx, f)
	if err != nil {
		return "", "", fmt.Errorf("unix: sha256 of %s (process %d): %w", path, pid, err)
	}
	// If the process exec'd another binary meanwhile, path and sum may not
	// describe the same file, nor what it runs now.
	now, err := os.Stat(exe)
	if err != nil {
		return "", "", fmt.Errorf("unix: binary of process %d: %w", pid, err)
	}
	hashed, err := f.Stat()
	if err != nil {
		return "", "", fmt.Errorf("unix: binary of process %d: %w", pid, err)
	}
	if !os.SameFile(now, hashed) {
		return "", "", processChangedError{pid}
	}
	return path, sum, nil
}

// hash returns the SHA-256 of f, from the cache when this version of the
// file was hashed before.
func (a *Attestor) hash(ctx context.Context, f *os.File) (string, error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return "", err
	}
	key := fileKey{dev: st.Dev, ino: st.Ino, size: uint64(st.Size), mtimeNs: st.Mtim.Nano(), ctimeNs: st.Ctim.Nano()}
	a.mu.Lock()
	sum, ok := a.sums[key]
	a.mu.Unlock()
	if ok {
		return sum, nil
	}
	sum, err := hashFile(ctx, f, a.c.WorkloadSizeLimit)
	if err != nil {
		return "", err
	}
	a.mu.Lock()
	if a.sums == nil || len(a.sums) >= maxCachedSums {
		a.sums = make(map[fileKey]string)
	}
	a.sums[key] = sum
	a.mu.Unlock()
	return sum, nil
}

// hashFile returns the SHA-256 of f in hex, failing if f is longer than
// limit bytes (limit 0: no limit) or ctx ends.
func hashFile(ctx context.Context, f *os.File, limit int64) (string, error) {
	if limit > 0 {
		fi, err := f.Stat()
		if err != nil {
			return "", err
		}
		if fi.Size() > limit {
			return "", fmt.Errorf("binary is %d bytes, over WorkloadSizeLimit of %d", fi.Size(), limit)
		}
	}
	h := sha256.New()
	buf := make([]byte, 256<<10)
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		m, err := f.Read(buf)
		h.Write(buf[:m])
		n += int64(m)
		// The file may have grown since Stat.
		if limit > 0 && n > limit {
			return "", fmt.Errorf("binary is over WorkloadSizeLimit of %d bytes", limit)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
