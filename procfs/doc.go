// Package procfs reads the few facts about a process that workload
// attestation rests on, from the kernel and from /proc.
//
// The Workload API server calls Caller when it accepts a connection: the
// kernel reports the peer's PID, UID and GID (SO_PEERCRED), and Caller adds
// the process start time from /proc/PID/stat.
//
//	conn, err := ln.AcceptUnix()
//	…
//	caller, err := procfs.Caller(conn, "/proc")
//	if err != nil {
//		conn.Close() // the peer is gone or cannot be identified
//	}
//	selectors, err := attestor.Attest(ctx, caller)
//
// A workload attestor reads /proc/PID/… and then calls StartTime again: if
// the start time still equals caller.StartTime, the PID still names the
// process that connected, and what was read belongs to it.
//
// # What is trusted
//
// PID, UID and GID are the kernel's record of the process that called
// connect(2) (its effective IDs at that moment); a client cannot forge them.
// The start time is read from /proc at accept time. Between connect and
// accept the peer could exit and its PID be reused; where the kernel offers
// SO_PEERPIDFD (Linux 6.5 and later) Caller closes that window by checking,
// after reading the start time, that the very process that connected is
// still alive. On older kernels the window stays open; it is short, and the
// attacker must win a PID-reuse race inside it.
//
// Start times count clock ticks since boot (usually 100 a second), so two
// processes that reuse one PID within the same tick share a start time.
//
// procDir is "/proc" in production; tests point it at a fake tree. It must
// be a procfs of the caller's PID namespace, since SO_PEERCRED reports PIDs
// as seen from the reading process.
package procfs
