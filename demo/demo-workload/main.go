// Command demo-workload is the workload `make demo` runs twice, as two users.
// It gets its X509-SVID from the SPIFFE Workload API with go-spiffe, then
// serves mTLS (-listen) or dials it (-dial), each side authorizing the other
// by SPIFFE ID. Over that connection the client sends a JWT-SVID minted for
// the server's SPIFFE ID, which the server validates through the Workload API.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

func main() {
	socket := flag.String("socket", "", "Workload API socket")
	name := flag.String("name", "workload", "name to print")
	listen := flag.String("listen", "", "serve mTLS on this address")
	dial := flag.String("dial", "", "dial mTLS to this address")
	peer := flag.String("peer", "", "SPIFFE ID the other side must present")
	flag.Parse()
	w := &workload{name: *name, addr: workloadapi.WithAddr("unix://" + *socket)}
	if err := w.run(*listen, *dial, *peer); err != nil {
		fmt.Fprintf(os.Stderr, "  [%s] error: %v\n", *name, err)
		os.Exit(1)
	}
}

type workload struct {
	name string
	addr workloadapi.ClientOption
}

func (w *workload) say(format string, args ...any) {
	fmt.Printf("  [%s, uid %d] %s\n", w.name, os.Getuid(), fmt.Sprintf(format, args...))
}

func (w *workload) run(listen, dial, peer string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	peerID, err := spiffeid.FromString(peer)
	if err != nil {
		return err
	}
	source, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(w.addr))
	if err != nil {
		return fmt.Errorf("could not get an X509-SVID: %w", err)
	}
	defer source.Close()
	svid, err := source.GetX509SVID()
	if err != nil {
		return err
	}
	w.say("got X509-SVID %s, valid until %s", svid.ID, svid.Certificates[0].NotAfter.Format(time.TimeOnly))
	if listen != "" {
		return w.serve(ctx, source, svid.ID, listen, peerID)
	}
	return w.call(ctx, source, dial, peerID)
}

func (w *workload) serve(ctx context.Context, source *workloadapi.X509Source, self spiffeid.ID, addr string, peer spiffeid.ID) error {
	l, err := spiffetls.ListenWithMode(ctx, "tcp", addr, spiffetls.MTLSServerWithSource(tlsconfig.AuthorizeID(peer), source))
	if err != nil {
		return err
	}
	defer l.Close()
	w.say("serving mTLS on %s; only %s may connect", addr, peer)
	fmt.Println("READY")
	conn, err := l.Accept()
	if err != nil {
		return err
	}
	defer conn.Close()
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("mTLS handshake or read failed: %w", err)
	}
	w.say("mTLS handshake done: the client proved it is %s", peer)
	jwt, err := workloadapi.ValidateJWTSVID(ctx, strings.TrimSpace(line), self.String(), w.addr)
	if err != nil {
		fmt.Fprintf(conn, "rejected: %v\n", err)
		return fmt.Errorf("JWT-SVID rejected: %w", err)
	}
	w.say("the JWT-SVID it sent is valid: subject %s, audience %v", jwt.ID, jwt.Audience)
	fmt.Fprintf(conn, "hello %s, this is %s\n", jwt.ID, self)
	return nil
}

func (w *workload) call(ctx context.Context, source *workloadapi.X509Source, addr string, peer spiffeid.ID) error {
	jwt, err := workloadapi.FetchJWTSVID(ctx, jwtsvid.Params{Audience: peer.String()}, w.addr)
	if err != nil {
		return fmt.Errorf("could not get a JWT-SVID: %w", err)
	}
	w.say("got JWT-SVID for audience %s, valid until %s", peer, jwt.Expiry.Format(time.TimeOnly))
	conn, err := spiffetls.DialWithMode(ctx, "tcp", addr, spiffetls.MTLSClientWithSource(tlsconfig.AuthorizeID(peer), source))
	if err != nil {
		return fmt.Errorf("mTLS dial failed: %w", err)
	}
	defer conn.Close()
	w.say("mTLS handshake done: the server proved it is %s", peer)
	fmt.Fprintln(conn, jwt.Marshal())
	reply, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	w.say("server replied: %q", strings.TrimSpace(reply))
	return nil
}
