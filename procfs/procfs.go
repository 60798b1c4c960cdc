package procfs

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/plinth-id/plinth/attestors"
)

// ErrNoProcess is wrapped by errors that say the process does not exist
// (any more).
var ErrNoProcess = errors.New("no such process")

// startTimeField is the 1-based number of the start time field in
// /proc/PID/stat (proc(5): "(22) starttime").
const startTimeField = 22

// StartTime returns the start time of process pid: field 22 of
// procDir/PID/stat, in clock ticks since boot. If the process does not exist
// the error wraps ErrNoProcess.
func StartTime(procDir string, pid int32) (uint64, error) {
	if pid <= 0 {
		return 0, fmt.Errorf("procfs: invalid pid %d", pid)
	}
	path := filepath.Join(procDir, strconv.FormatInt(int64(pid), 10), "stat")
	b, err := os.ReadFile(path)
	if err != nil {
		if gone(err) {
			return 0, fmt.Errorf("procfs: process %d: %w: %w", pid, ErrNoProcess, err)
		}
		return 0, fmt.Errorf("procfs: %w", err)
	}
	t, err := parseStartTime(b)
	if err != nil {
		return 0, fmt.Errorf("procfs: %s: %w", path, err)
	}
	return t, nil
}

// gone reports whether err from reading /proc/PID/… means the process does
// not exist: ENOENT before open, ESRCH when it exits while being read.
func gone(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH)
}

// parseStartTime returns field 22 of the contents of /proc/PID/stat.
//
// The second field is the command name in parentheses. It is chosen by the
// process (prctl PR_SET_NAME) and may hold spaces, parentheses and any byte
// but NUL, so it cannot be split on spaces: the fields after it start after
// the last ')' in the line, since none of them can contain one.
func parseStartTime(stat []byte) (uint64, error) {
	open := bytes.IndexByte(stat, '(')
	end := bytes.LastIndexByte(stat, ')')
	if open < 0 || end < open {
		return 0, errors.New("stat has no (command name)")
	}
	// After ')' come fields 3 (state), 4, … separated by single spaces.
	rest := bytes.Fields(stat[end+1:])
	i := startTimeField - 3
	if len(rest) <= i {
		return 0, fmt.Errorf("stat has %d fields, want at least %d", len(rest)+2, startTimeField)
	}
	t, err := strconv.ParseUint(string(rest[i]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stat field %d: %w", startTimeField, err)
	}
	return t, nil
}

// Caller returns the identity of the process at the other end of conn: PID,
// UID and GID from the kernel (SO_PEERCRED, fixed when the peer called
// connect) and StartTime from procDir/PID/stat. It is meant to be called
// once, right after accept.
//
// If the kernel supports SO_PEERPIDFD, Caller also checks that the process
// that connected is still alive after its start time was read, so the start
// time cannot belong to a later process that reused the PID. If the peer has
// exited, the error wraps ErrNoProcess.
func Caller(conn *net.UnixConn, procDir string) (attestors.Caller, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return attestors.Caller{}, fmt.Errorf("procfs: peer credentials: %w", err)
	}
	var (
		cred           *unix.Ucred
		credErr, fdErr error
		pidfd          = -1
	)
	err = raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if credErr == nil {
			pidfd, fdErr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PEERPIDFD)
		}
	})
	if err == nil {
		err = credErr
	}
	if err != nil {
		return attestors.Caller{}, fmt.Errorf("procfs: peer credentials: %w", err)
	}
	switch {
	case fdErr == nil:
		defer unix.Close(pidfd)
	case errors.Is(fdErr, unix.ESRCH):
		// Newer kernels refuse a pidfd for a peer that has been reaped.
		return attestors.Caller{}, fmt.Errorf("procfs: peer process %d exited before it could be identified: %w", cred.Pid, ErrNoProcess)
	default:
		// Older kernels (ENOPROTOOPT): identify by PID and start time only.
		pidfd = -1
	}
	if cred.Pid <= 0 {
		// The peer lives in a PID namespace this process cannot see into.
		return attestors.Caller{}, fmt.Errorf("procfs: peer has no pid in this pid namespace (pid %d)", cred.Pid)
	}
	start, err := StartTime(procDir, cred.Pid)
	if err != nil {
		return attestors.Caller{}, err
	}
	if pidfd >= 0 {
		// Signal 0 checks existence only. EPERM means it exists but belongs
		// to someone this process may not signal; only ESRCH means gone.
		// A zombie still answers, and its PID is not reused until reaped.
		if err := unix.PidfdSendSignal(pidfd, 0, nil, 0); errors.Is(err, unix.ESRCH) {
			return attestors.Caller{}, fmt.Errorf("procfs: peer process %d exited before it could be identified: %w", cred.Pid, ErrNoProcess)
		}
	}
	return attestors.Caller{
		PID:       cred.Pid,
		UID:       cred.Uid,
		GID:       cred.Gid,
		StartTime: start,
	}, nil
}
