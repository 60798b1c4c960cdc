package procfs_test

import (
	"fmt"
	"log"
	"net"
	"os"

	"github.com/plinth-id/plinth/procfs"
)

// Caller identifies the process at the other end of an accepted
// connection; here that is this process.
func ExampleCaller() {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: fmt.Sprintf("@plinth-procfs-example-%d", os.Getpid()), Net: "unix"})
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("unix", ln.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	conn, err := ln.AcceptUnix()
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()

	caller, err := procfs.Caller(conn, "/proc")
	if err != nil {
		log.Fatal(err)
	}
	start, err := procfs.StartTime("/proc", caller.PID)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(caller.PID == int32(os.Getpid()), caller.UID == uint32(os.Geteuid()), caller.StartTime == start)
	// Output: true true true
}
