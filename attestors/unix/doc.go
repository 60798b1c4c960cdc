// Package unix is the "unix" workload attestor: it describes a process
// calling the Workload API by its user, groups and, optionally, its binary,
// with the same selectors as SPIRE's unix plugin.
//
//	a, err := unix.New(unix.Config{DiscoverWorkloadPath: true})
//	…
//	caller, err := procfs.Caller(conn, "/proc") // at accept time
//	…
//	selectors, err := a.Attest(ctx, caller)
//	// unix:gid:1000 unix:group:app unix:path:/usr/bin/app
//	// unix:sha256:3a6e… unix:uid:1000 unix:user:app …
//
// # Selectors
//
//	unix:uid:<n>                     effective UID at connect time
//	unix:user:<name>                 its user name, if it has one
//	unix:gid:<n>                     effective GID at connect time
//	unix:group:<name>                its group name, if it has one
//	unix:supplementary_gid:<n>       each of /proc/PID/status "Groups:"
//	unix:supplementary_group:<name>  its name, if it has one
//	unix:path:<path>                 readlink /proc/PID/exe (DiscoverWorkloadPath)
//	unix:sha256:<hex>                SHA-256 of the binary (DiscoverWorkloadPath)
//
// Names come from os/user; a lookup that fails, for whatever reason, leaves
// the name selector out, as SPIRE does.
//
// # What is trusted
//
// uid and gid come from Caller, which the kernel filled in (SO_PEERCRED);
// /proc is not consulted for them. Supplementary groups, path and sha256 are
// read from /proc during Attest. Attest checks the process start time against
// Caller.StartTime before and after reading, so everything it returns belongs
// to the process that connected; if the process exited or its PID was
// reused, Attest returns an error wrapping ErrProcessChanged and no
// selectors.
//
// The binary is hashed by opening /proc/PID/exe, which is the file the
// process runs even if the path on disk now names another file.
//
// Caveat: exec(2) keeps the PID and the start time. A process may connect,
// pass the socket to a child, then exec a binary it does not control; path
// and sha256 describe what the PID runs during Attest, not who holds the
// connection. uid and gid are fixed at connect time and are not affected.
// Register path and sha256 selectors together with uid.
//
// The path is as the process's mount namespace sees it. A binary deleted
// (or replaced by rename) after it started reads as "<path> (deleted)",
// which matches no registration, as in SPIRE.
package unix
