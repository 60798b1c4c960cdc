package unix

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"

	"github.com/plinth-id/plinth/attestors"
	"github.com/plinth-id/plinth/procfs"
)

const (
	helperEnv     = "PLINTH_UNIX_TEST_HELPER"
	helperAddrEnv = "PLINTH_UNIX_TEST_ADDR"
)

// TestMain lets the test binary act as the workload in these tests.
func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "wait":
		// Live until stdin closes.
		os.Stdin.Read(make([]byte, 1))
		os.Exit(0)
	case "connect":
		// Connect to the test, then live until it hangs up.
		c, err := net.Dial("unix", os.Getenv(helperAddrEnv))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		c.Read(make([]byte, 1))
		os.Exit(0)
	default:
		os.Exit(2)
	}
}

// startWaiting starts the binary at path (this test binary or a copy) as a
// child that lives until the test ends, and returns it with its Caller.
func startWaiting(t *testing.T, path string) (*exec.Cmd, attestors.Caller) {
	t.Helper()
	cmd := exec.Command(path)
	cmd.Env = append(os.Environ(), helperEnv+"=wait")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	start, err := procfs.StartTime("/proc", int32(cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	return cmd, attestors.Caller{
		PID:       int32(cmd.Process.Pid),
		UID:       uint32(os.Geteuid()),
		GID:       uint32(os.Getegid()),
		StartTime: start,
	}
}

// selectors builds the selectors expected for a process with these IDs,
// adding name selectors where this machine resolves the IDs.
func selectors(uid, gid uint32, groups []int, extra ...string) []attestors.Selector {
	var ss []attestors.Selector
	add := func(v string) { ss = append(ss, attestors.Selector{Type: "unix", Value: v}) }
	add("uid:" + strconv.Itoa(int(uid)))
	if u, err := user.LookupId(strconv.Itoa(int(uid))); err == nil {
		add("user:" + u.Username)
	}
	add("gid:" + strconv.Itoa(int(gid)))
	if g, err := user.LookupGroupId(strconv.Itoa(int(gid))); err == nil {
		add("group:" + g.Name)
	}
	for _, sg := range groups {
		add("supplementary_gid:" + strconv.Itoa(sg))
		if g, err := user.LookupGroupId(strconv.Itoa(sg)); err == nil {
			add("supplementary_group:" + g.Name)
		}
	}
	for _, e := range extra {
		add(e)
	}
	return attestors.SortSelectors(ss)
}

func fileSHA256(t *testing.T, path string) (string, int64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil)), n
}

func testBinary(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	exe, err = filepath.EvalSymlinks(exe)
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

func TestAttestChild(t *testing.T) {
	exe := testBinary(t)
	sum, size := fileSHA256(t, exe)
	cmd, caller := startWaiting(t, exe)
	groups, err := os.Getgroups() // the child inherits them
	if err != nil {
		t.Fatal(err)
	}
	uid, gid := uint32(os.Geteuid()), uint32(os.Getegid())

	tests := []struct {
		name    string
		config  Config
		want    []attestors.Selector
		wantErr string
	}{
		{
			name:   "ids only",
			config: Config{},
			want:   selectors(uid, gid, groups),
		},
		{
			name:   "path and sha256",
			config: Config{DiscoverWorkloadPath: true},
			want:   selectors(uid, gid, groups, "path:"+exe, "sha256:"+sum),
		},
		{
			name:   "limit equal to size",
			config: Config{DiscoverWorkloadPath: true, WorkloadSizeLimit: size},
			want:   selectors(uid, gid, groups, "path:"+exe, "sha256:"+sum),
		},
		{
			name:   "negative limit: path only",
			config: Config{DiscoverWorkloadPath: true, WorkloadSizeLimit: -1},
			want:   selectors(uid, gid, groups, "path:"+exe),
		},
		{
			name:    "binary over the limit",
			config:  Config{DiscoverWorkloadPath: true, WorkloadSizeLimit: size - 1},
			wantErr: fmt.Sprintf("unix: sha256 of %s (process %d): binary is %d bytes, over WorkloadSizeLimit of %d", exe, cmd.Process.Pid, size, size-1),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := New(tt.config)
			if err != nil {
				t.Fatal(err)
			}
			got, err := a.Attest(context.Background(), caller)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("Attest() error = %v, want %q", err, tt.wantErr)
				}
				if got != nil {
					t.Errorf("Attest() returned selectors with an error: %v", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Attest() error = %v", err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Attest() =\n%v\nwant\n%v", got, tt.want)
			}
		})
	}
}

// The sha256 selector hashes the file the process runs, not what its path
// names now.
func TestAttestReplacedBinary(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "workload")
	copyFile(t, testBinary(t), exe)
	sum, _ := fileSHA256(t, exe)
	_, caller := startWaiting(t, exe)

	// Replace the binary on disk the way package managers do: rename over it.
	if err := os.WriteFile(exe+".new", []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(exe+".new", exe); err != nil {
		t.Fatal(err)
	}

	a, err := New(Config{DiscoverWorkloadPath: true})
	if err != nil {
		t.Fatal(err)
	}
	got, err := a.Attest(context.Background(), caller)
	if err != nil {
		t.Fatal(err)
	}
	want := selectors(caller.UID, caller.GID, mustGetgroups(t), "path:"+exe+" (deleted)", "sha256:"+sum)
	if !slices.Equal(got, want) {
		t.Errorf("Attest() =\n%v\nwant\n%v", got, want)
	}
}

func mustGetgroups(t *testing.T) []int {
	t.Helper()
	groups, err := os.Getgroups()
	if err != nil {
		t.Fatal(err)
	}
	return groups
}

func TestAttestWrongStartTime(t *testing.T) {
	_, caller := startWaiting(t, testBinary(t))
	a, err := New(Config{DiscoverWorkloadPath: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, start := range []uint64{caller.StartTime - 1, caller.StartTime + 1, 0} {
		c := caller
		c.StartTime = start
		got, err := a.Attest(context.Background(), c)
		want := fmt.Sprintf("unix: process %d exited or was replaced during attestation", c.PID)
		if err == nil || err.Error() != want {
			t.Fatalf("Attest(start time %d) error = %v, want %q", start, err, want)
		}
		if got != nil {
			t.Errorf("Attest() returned selectors with an error: %v", got)
		}
		if !errors.Is(err, ErrProcessChanged) || !errors.Is(err, attestors.ErrRejected) {
			t.Errorf("error %v does not wrap ErrProcessChanged and attestors.ErrRejected", err)
		}
	}
}

func TestAttestExited(t *testing.T) {
	cmd := exec.Command(testBinary(t))
	cmd.Env = append(os.Environ(), helperEnv+"=wait")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	start, err := procfs.StartTime("/proc", int32(cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	// The process has exited and been reaped.
	caller := attestors.Caller{PID: int32(cmd.Process.Pid), UID: uint32(os.Geteuid()), GID: uint32(os.Getegid()), StartTime: start}
	a, err := New(Config{DiscoverWorkloadPath: true})
	if err != nil {
		t.Fatal(err)
	}
	got, err := a.Attest(context.Background(), caller)
	want := fmt.Sprintf("unix: process %d exited or was replaced during attestation", caller.PID)
	if err == nil || err.Error() != want {
		t.Fatalf("Attest() error = %v, want %q", err, want)
	}
	if got != nil {
		t.Errorf("Attest() returned selectors with an error: %v", got)
	}
}

func TestAttestCanceled(t *testing.T) {
	exe := testBinary(t)
	cmd, caller := startWaiting(t, exe)
	a, err := New(Config{DiscoverWorkloadPath: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = a.Attest(ctx, caller)
	want := fmt.Sprintf("unix: sha256 of %s (process %d): context canceled", exe, cmd.Process.Pid)
	if err == nil || err.Error() != want {
		t.Fatalf("Attest() error = %v, want %q", err, want)
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("error %v does not wrap context.Canceled", err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

// A workload running as another user connects over a real socket; its
// identity comes from the kernel, through procfs.Caller, into Attest.
func TestAttestOtherUserOverSocket(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to start a process as another user")
	}
	const uid, gid = 1001, 1001
	supplementary := []uint32{0, 2001}

	// The test binary's own directory is private to root; put a copy where
	// uid 1001 can run it. t.TempDir's parent is private too.
	dir, err := os.MkdirTemp("", "plinth-unix-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "workload")
	copyFile(t, testBinary(t), exe)
	sum, _ := fileSHA256(t, exe)

	// An abstract socket has no file permissions to arrange.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: fmt.Sprintf("@plinth-unix-test-%d", os.Getpid()), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), helperEnv+"=connect", helperAddrEnv+"="+ln.Addr().String())
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: supplementary}}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	conn, err := ln.AcceptUnix()
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close() // the child exits when the test hangs up
		if err := cmd.Wait(); err != nil {
			t.Errorf("workload: %v", err)
		}
	})

	caller, err := procfs.Caller(conn, "/proc")
	if err != nil {
		t.Fatal(err)
	}
	start, err := procfs.StartTime("/proc", int32(cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if want := (attestors.Caller{PID: int32(cmd.Process.Pid), UID: uid, GID: gid, StartTime: start}); caller != want {
		t.Fatalf("procfs.Caller() = %+v, want %+v", caller, want)
	}

	a, err := New(Config{DiscoverWorkloadPath: true})
	if err != nil {
		t.Fatal(err)
	}
	got, err := a.Attest(context.Background(), caller)
	if err != nil {
		t.Fatal(err)
	}
	want := selectors(uid, gid, []int{0, 2001}, "path:"+exe, "sha256:"+sum)
	if !slices.Contains(got, attestors.Selector{Type: "unix", Value: "uid:1001"}) {
		t.Errorf("Attest() = %v, lacks unix:uid:1001", got)
	}
	if !slices.Equal(got, want) {
		t.Errorf("Attest() =\n%v\nwant\n%v", got, want)
	}
}

// fakeProcess writes dir/PID/{stat,status,exe} for a process running bin.
func fakeProcess(t *testing.T, dir string, pid int, start uint64, status, bin string) {
	t.Helper()
	p := filepath.Join(dir, strconv.Itoa(pid))
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	stat := fmt.Sprintf("%d (w) (x y) S 1 1 1 0 -1 4194560 120 0 0 0 0 0 0 0 20 0 1 0 %d 3133440 389 18446744073709551615 0 0 0\n", pid, start)
	if err := os.WriteFile(filepath.Join(p, "stat"), []byte(stat), 0o644); err != nil {
		t.Fatal(err)
	}
	if status != "" {
		if err := os.WriteFile(filepath.Join(p, "status"), []byte(status), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if bin != "" {
		if err := os.Symlink(bin, filepath.Join(p, "exe")); err != nil {
			t.Fatal(err)
		}
	}
}

func status(groups string) string {
	return "Name:\tw\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t7\t7\t7\t7\nGid:\t8\t8\t8\t8\nFDSize:\t64\nGroups:" + groups + "\nNStgid:\t100\n"
}

func TestAttestFakeProc(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin", "app")
	if err := os.Mkdir(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	content := []byte("#!/bin/false\nnot really a program\n")
	if err := os.WriteFile(bin, content, 0o755); err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256(content)
	sum := hex.EncodeToString(digest[:])
	size := int64(len(content))

	fakeProcess(t, dir, 100, 5000, status("\t4000 4001 0 "), bin)
	fakeProcess(t, dir, 101, 5000, status("\t"), bin)
	fakeProcess(t, dir, 102, 5000, status("\t12 x"), bin)
	fakeProcess(t, dir, 103, 5000, "Name:\tw\n", bin)
	fakeProcess(t, dir, 104, 5000, status("\t"), "")
	fakeProcess(t, dir, 105, 5000, "", bin)

	const uid, gid = 4242, 4343
	tests := []struct {
		name    string
		config  Config
		caller  attestors.Caller
		want    []attestors.Selector
		wantErr string
	}{
		{
			name:   "supplementary groups",
			caller: attestors.Caller{PID: 100, UID: uid, GID: gid, StartTime: 5000},
			want:   selectors(uid, gid, []int{4000, 4001, 0}),
		},
		{
			name:   "no supplementary groups",
			caller: attestors.Caller{PID: 101, UID: uid, GID: gid, StartTime: 5000},
			want:   selectors(uid, gid, nil),
		},
		{
			name:   "path and sha256",
			config: Config{DiscoverWorkloadPath: true, WorkloadSizeLimit: size},
			caller: attestors.Caller{PID: 101, UID: uid, GID: gid, StartTime: 5000},
			want:   selectors(uid, gid, nil, "path:"+bin, "sha256:"+sum),
		},
		{
			name:    "over the size limit",
			config:  Config{DiscoverWorkloadPath: true, WorkloadSizeLimit: size - 1},
			caller:  attestors.Caller{PID: 101, UID: uid, GID: gid, StartTime: 5000},
			wantErr: fmt.Sprintf("unix: sha256 of %s (process 101): binary is %d bytes, over WorkloadSizeLimit of %d", bin, size, size-1),
		},
		{
			name:    "start time differs",
			config:  Config{DiscoverWorkloadPath: true},
			caller:  attestors.Caller{PID: 100, UID: uid, GID: gid, StartTime: 5001},
			wantErr: "unix: process 100 exited or was replaced during attestation",
		},
		{
			name:    "no such process",
			caller:  attestors.Caller{PID: 999, UID: uid, GID: gid, StartTime: 5000},
			wantErr: "unix: process 999 exited or was replaced during attestation",
		},
		{
			name:    "no exe (zombie or kernel thread)",
			config:  Config{DiscoverWorkloadPath: true},
			caller:  attestors.Caller{PID: 104, UID: uid, GID: gid, StartTime: 5000},
			wantErr: "unix: process 104 exited or was replaced during attestation",
		},
		{
			name:    "no status",
			caller:  attestors.Caller{PID: 105, UID: uid, GID: gid, StartTime: 5000},
			wantErr: "unix: process 105 exited or was replaced during attestation",
		},
		{
			name:    "bad supplementary gid",
			caller:  attestors.Caller{PID: 102, UID: uid, GID: gid, StartTime: 5000},
			wantErr: `unix: supplementary groups of process 102: bad gid "x"`,
		},
		{
			name:    "no Groups line",
			caller:  attestors.Caller{PID: 103, UID: uid, GID: gid, StartTime: 5000},
			wantErr: "unix: supplementary groups of process 103: no Groups line in status",
		},
		{
			name:    "invalid pid",
			caller:  attestors.Caller{PID: 0, UID: uid, GID: gid, StartTime: 5000},
			wantErr: "unix: invalid pid 0",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.config.ProcDir = dir
			a, err := New(tt.config)
			if err != nil {
				t.Fatal(err)
			}
			got, err := a.Attest(context.Background(), tt.caller)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("Attest() error = %v, want %q", err, tt.wantErr)
				}
				if got != nil {
					t.Errorf("Attest() returned selectors with an error: %v", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Attest() error = %v", err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Attest() =\n%v\nwant\n%v", got, tt.want)
			}
		})
	}
}

func TestHashFileLimit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, []byte("0123456789"), 0o644); err != nil {
		t.Fatal(err)
	}
	const sum = "84d89877f0d4041efb6bf91a16f0248f2fd573e6af05c19f96bedb9f882f7882"
	tests := []struct {
		name    string
		path    string
		limit   int64
		wantErr string
	}{
		{name: "no limit", path: path, limit: 0},
		{name: "at the limit", path: path, limit: 10},
		{name: "over the limit", path: path, limit: 9, wantErr: "binary is 10 bytes, over WorkloadSizeLimit of 9"},
		// procfs files report size 0, like a file that grew after Stat:
		// the limit is enforced while reading too.
		{name: "over the limit while reading", path: "/proc/self/status", limit: 9, wantErr: "binary is over WorkloadSizeLimit of 9 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := os.Open(tt.path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			got, err := hashFile(context.Background(), f, tt.limit)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("hashFile() error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != sum {
				t.Errorf("hashFile() = %s, want %s", got, sum)
			}
		})
	}
}

func TestNew(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "missing")
	tests := []struct {
		name    string
		config  Config
		wantErr string
	}{
		{name: "default", config: Config{}},
		{name: "relative", config: Config{ProcDir: "proc"}, wantErr: `unix: ProcDir "proc" is not an absolute path`},
		{name: "missing", config: Config{ProcDir: missing}, wantErr: "unix: ProcDir: stat " + missing + ": no such file or directory"},
		{name: "not a directory", config: Config{ProcDir: file}, wantErr: fmt.Sprintf("unix: ProcDir %q is not a directory", file)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := New(tt.config)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("New() error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if a.Name() != "unix" {
				t.Errorf("Name() = %q, want unix", a.Name())
			}
			if a.c.ProcDir != "/proc" {
				t.Errorf("ProcDir = %q, want /proc", a.c.ProcDir)
			}
		})
	}
}
