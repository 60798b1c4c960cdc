package procfs

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/plinth-id/plinth/attestors"
)

// statLine returns a /proc/PID/stat line shaped like the kernel's, with the
// given command name and start time (field 22).
func statLine(pid int, comm string, start uint64) string {
	return fmt.Sprintf("%d (%s) S 1 %d %d 0 -1 4194560 120 0 0 0 0 0 0 0 20 0 1 0 %d 3133440 389 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n",
		pid, comm, pid, pid, start)
}

func TestParseStartTime(t *testing.T) {
	tests := []struct {
		name    string
		stat    string
		want    uint64
		wantErr string
	}{
		{name: "plain", stat: statLine(5512, "cat", 35697), want: 35697},
		{name: "spaces in comm", stat: statLine(7, "my worker 1", 42), want: 42},
		{name: "parens and spaces in comm", stat: statLine(7, "a) (b c", 43), want: 43},
		{name: "comm mimics fields", stat: statLine(7, "x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 99 (", 44), want: 44},
		{name: "comm is a paren", stat: statLine(7, ")", 45), want: 45},
		{name: "empty comm", stat: statLine(7, "", 46), want: 46},
		{name: "newline in comm", stat: statLine(7, "a\nb", 47), want: 47},
		{name: "max start time", stat: statLine(7, "z", 18446744073709551615), want: 18446744073709551615},
		{name: "no newline", stat: "1 (init) S 0 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5", want: 5},
		{name: "empty", stat: "", wantErr: "stat has no (command name)"},
		{name: "no parens", stat: "1 init S 0 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5", wantErr: "stat has no (command name)"},
		{name: "close before open", stat: "1 )init( S", wantErr: "stat has no (command name)"},
		{name: "too few fields", stat: "1 (init) S 0 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0", wantErr: "stat has 21 fields, want at least 22"},
		{name: "start time not a number", stat: "1 (init) S 0 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 -5", wantErr: `stat field 22: strconv.ParseUint: parsing "-5": invalid syntax`},
		{name: "start time overflows", stat: "1 (init) S 0 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 18446744073709551616", wantErr: `stat field 22: strconv.ParseUint: parsing "18446744073709551616": value out of range`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStartTime([]byte(tt.stat))
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("parseStartTime() error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseStartTime() error = %v", err)
			}
			if got != tt.want {
				t.Errorf("parseStartTime() = %d, want %d", got, tt.want)
			}
		})
	}
}

// fakeProc writes procDir/PID/stat for each entry and returns procDir.
func fakeProc(t *testing.T, stats map[int]string) string {
	t.Helper()
	dir := t.TempDir()
	for pid, stat := range stats {
		p := filepath.Join(dir, strconv.Itoa(pid))
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(p, "stat"), []byte(stat), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestStartTimeFakeProc(t *testing.T) {
	dir := fakeProc(t, map[int]string{
		100: statLine(100, "evil) (name", 123456),
		101: "101 (broken",
	})
	tests := []struct {
		name      string
		pid       int32
		want      uint64
		wantErr   string
		noProcess bool
	}{
		{name: "tricky comm", pid: 100, want: 123456},
		{name: "missing process", pid: 102, noProcess: true,
			wantErr: "procfs: process 102: no such process: open " + dir + "/102/stat: no such file or directory"},
		{name: "malformed stat", pid: 101, wantErr: "procfs: " + dir + "/101/stat: stat has no (command name)"},
		{name: "zero pid", pid: 0, wantErr: "procfs: invalid pid 0"},
		{name: "negative pid", pid: -1, wantErr: "procfs: invalid pid -1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := StartTime(dir, tt.pid)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("StartTime() error = %v, want %q", err, tt.wantErr)
				}
				if errors.Is(err, ErrNoProcess) != tt.noProcess {
					t.Errorf("errors.Is(err, ErrNoProcess) = %v, want %v", !tt.noProcess, tt.noProcess)
				}
				return
			}
			if err != nil {
				t.Fatalf("StartTime() error = %v", err)
			}
			if got != tt.want {
				t.Errorf("StartTime() = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestStartTimeRealProcess(t *testing.T) {
	self, err := StartTime("/proc", int32(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	if self == 0 {
		t.Fatal("StartTime(self) = 0")
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=wait")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Wait() })
	child, err := StartTime("/proc", int32(cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if child < self {
		t.Errorf("child start time %d is before parent start time %d", child, self)
	}
	again, err := StartTime("/proc", int32(cmd.Process.Pid))
	if err != nil || again != child {
		t.Errorf("StartTime(child) again = %d, %v, want %d", again, err, child)
	}
}

// selfCaller is this process as Caller should report it.
func selfCaller(t *testing.T) attestors.Caller {
	t.Helper()
	start, err := StartTime("/proc", int32(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	return attestors.Caller{
		PID:       int32(os.Getpid()),
		UID:       uint32(os.Geteuid()),
		GID:       uint32(os.Getegid()),
		StartTime: start,
	}
}

func TestCallerSocketpair(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fds[0]), "socketpair")
	defer f.Close()
	defer unix.Close(fds[1])
	c, err := net.FileConn(f)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	got, err := Caller(c.(*net.UnixConn), "/proc")
	if err != nil {
		t.Fatal(err)
	}
	if want := selfCaller(t); got != want {
		t.Errorf("Caller() = %+v, want %+v", got, want)
	}
}

// listen returns a listener on a fresh abstract unix socket, which any
// process in this network namespace can reach whatever its user.
func listen(t *testing.T) *net.UnixListener {
	t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: fmt.Sprintf("@plinth-procfs-test-%d-%s", os.Getpid(), t.Name()), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func TestCallerListener(t *testing.T) {
	ln := listen(t)
	client, err := net.DialUnix("unix", nil, ln.Addr().(*net.UnixAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	conn, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	got, err := Caller(conn, "/proc")
	if err != nil {
		t.Fatal(err)
	}
	if want := selfCaller(t); got != want {
		t.Errorf("Caller() = %+v, want %+v", got, want)
	}

	// The start time comes from procDir.
	pid := os.Getpid()
	dir := fakeProc(t, map[int]string{pid: statLine(pid, "fake", 777)})
	got, err = Caller(conn, dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.StartTime != 777 {
		t.Errorf("Caller(fake procDir).StartTime = %d, want 777", got.StartTime)
	}

	_, err = Caller(conn, t.TempDir())
	if !errors.Is(err, ErrNoProcess) {
		t.Errorf("Caller(empty procDir) error = %v, want ErrNoProcess", err)
	}
}

func TestCallerPeerExited(t *testing.T) {
	ln := listen(t)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=connect-and-exit", helperAddrEnv+"="+ln.Addr().String())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	conn, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper: %v", err)
	}
	// The peer has exited and been reaped.
	_, err = Caller(conn, "/proc")
	if !errors.Is(err, ErrNoProcess) {
		t.Fatalf("Caller() error = %v, want ErrNoProcess", err)
	}
	want := fmt.Sprintf("procfs: peer process %d exited before it could be identified: no such process", cmd.Process.Pid)
	want2 := fmt.Sprintf("procfs: process %d: no such process: open /proc/%d/stat: no such file or directory", cmd.Process.Pid, cmd.Process.Pid)
	if err.Error() != want && err.Error() != want2 {
		t.Errorf("Caller() error = %q, want %q or %q", err, want, want2)
	}

	// Now pretend the PID was reused: procDir has a live-looking process
	// under it. Only the pidfd check can tell, on kernels that have one.
	if !havePeerPidfd(t, conn) {
		t.Skip("kernel lacks SO_PEERPIDFD; cannot detect PID reuse between connect and accept")
	}
	pid := cmd.Process.Pid
	dir := fakeProc(t, map[int]string{pid: statLine(pid, "impostor", 999)})
	_, err = Caller(conn, dir)
	if err == nil || err.Error() != want {
		t.Fatalf("Caller(reused pid) error = %v, want %q", err, want)
	}
	if !errors.Is(err, ErrNoProcess) {
		t.Errorf("Caller(reused pid) error does not wrap ErrNoProcess")
	}
}

func havePeerPidfd(t *testing.T, conn *net.UnixConn) bool {
	t.Helper()
	raw, err := conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fdErr error
	raw.Control(func(fd uintptr) {
		var pidfd int
		pidfd, fdErr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PEERPIDFD)
		if fdErr == nil {
			unix.Close(pidfd)
		}
	})
	return fdErr == nil
}

const (
	helperEnv     = "PLINTH_PROCFS_TEST_HELPER"
	helperAddrEnv = "PLINTH_PROCFS_TEST_ADDR"
)

// TestMain lets the test binary act as a child process for the tests above.
func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "wait":
		// Live until stdin closes.
		os.Stdin.Read(make([]byte, 1))
		os.Exit(0)
	case "connect-and-exit":
		c, err := net.Dial("unix", os.Getenv(helperAddrEnv))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		_ = c // exit without closing: the kernel keeps the peer credentials
		os.Exit(0)
	default:
		os.Exit(2)
	}
}
