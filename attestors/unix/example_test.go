package unix_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/plinth-id/plinth/attestors"
	"github.com/plinth-id/plinth/attestors/unix"
	"github.com/plinth-id/plinth/procfs"
)

// A Workload API server identifies each connection when it accepts it, and
// attests the caller when it asks for an SVID. Here the workload is this
// process, dialing itself.
func Example() {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: fmt.Sprintf("@plinth-example-%d", os.Getpid()), Net: "unix"})
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("unix", ln.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	// Server side, at accept time.
	conn, err := ln.AcceptUnix()
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	caller, err := procfs.Caller(conn, "/proc")
	if err != nil {
		log.Fatal(err)
	}

	// Later, per request.
	a, err := unix.New(unix.Config{DiscoverWorkloadPath: true})
	if err != nil {
		log.Fatal(err)
	}
	selectors, err := a.Attest(context.Background(), caller)
	if err != nil {
		log.Fatal(err)
	}

	exe, _ := os.Executable()
	uid := attestors.Selector{Type: "unix", Value: "uid:" + strconv.Itoa(os.Geteuid())}
	path := attestors.Selector{Type: "unix", Value: "path:" + exe}
	for _, s := range selectors {
		if s == uid || s == path {
			kind, _, _ := strings.Cut(s.Value, ":")
			fmt.Println("attested", kind)
		}
	}
	// Output:
	// attested path
	// attested uid
}
