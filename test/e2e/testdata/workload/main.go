// Command workload is the second workload of the end-to-end tests: a
// process with its own binary path, hence its own SPIFFE ID, that talks to
// the agent only through go-spiffe.
//
//	workload -socket S -mode fetch
//	    prints "svid <SPIFFE ID>" for each X509-SVID it receives and exits.
//	workload -socket S -mode serve -peer spiffe://example.org/test
//	    serves mTLS on a free loopback port, admitting only -peer; prints
//	    "listening <addr>", then for each connection either "accepted
//	    <peer ID>" and a reply, or "refused <error>". Stops on SIGTERM.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

func main() {
	socket := flag.String("socket", "", "agent Workload API socket")
	mode := flag.String("mode", "fetch", "fetch or serve")
	peer := flag.String("peer", "", "SPIFFE ID the server admits (serve)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	var err error
	switch *mode {
	case "fetch":
		err = fetch(ctx, *socket)
	case "serve":
		err = serve(ctx, *socket, *peer)
	default:
		err = fmt.Errorf("unknown -mode %q", *mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "workload:", err)
		os.Exit(1)
	}
}

func clientOpts(socket string) workloadapi.ClientOption {
	return workloadapi.WithAddr("unix://" + socket)
}

func fetch(ctx context.Context, socket string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	svids, err := workloadapi.FetchX509SVIDs(ctx, clientOpts(socket))
	if err != nil {
		return err
	}
	for _, s := range svids {
		fmt.Println("svid", s.ID)
	}
	return nil
}

func serve(ctx context.Context, socket, peer string) error {
	peerID, err := spiffeid.FromString(peer)
	if err != nil {
		return fmt.Errorf("invalid -peer: %w", err)
	}
	startCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	source, err := workloadapi.NewX509Source(startCtx, workloadapi.WithClientOptions(clientOpts(socket)))
	if err != nil {
		return err
	}
	defer source.Close()
	svid, err := source.GetX509SVID()
	if err != nil {
		return err
	}
	l, err := spiffetls.ListenWithMode(ctx, "tcp", "127.0.0.1:0", spiffetls.MTLSServerWithSource(tlsconfig.AuthorizeID(peerID), source))
	if err != nil {
		return err
	}
	fmt.Println("svid", svid.ID)
	fmt.Println("listening", l.Addr())
	go func() {
		<-ctx.Done()
		l.Close()
	}()
	for {
		conn, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		go answer(conn, svid.ID)
	}
}

// answer reads one line and replies "hello <line> from <own ID>". The first
// read runs the handshake, so a refused peer shows up here.
func answer(conn net.Conn, self spiffeid.ID) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		fmt.Println("refused", err)
		return
	}
	id, err := spiffetls.PeerIDFromConn(conn)
	if err != nil {
		fmt.Println("refused", err)
		return
	}
	fmt.Println("accepted", id)
	fmt.Fprintf(conn, "hello %s from %s\n", line[:len(line)-1], self)
}
