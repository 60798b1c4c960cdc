package main

import (
	"context"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/plinth-id/plinth/conf"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// adminCmd holds what every admin command shares: the socket and the output
// format (pretty for people, json for scripts).
type adminCmd struct {
	fs         *flag.FlagSet
	socketPath string
	output     string
}

func newAdminCmd(name string) *adminCmd {
	c := &adminCmd{fs: flag.NewFlagSet(name, flag.ContinueOnError)}
	c.fs.StringVar(&c.socketPath, "socketPath", conf.DefaultServerSocketPath, "Path to the plinth-server admin API socket")
	c.fs.StringVar(&c.output, "output", "pretty", "Desired output format (pretty, json)")
	return c
}

func (c *adminCmd) parse(args []string) error {
	if err := c.fs.Parse(args); err != nil {
		return err
	}
	if c.fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q; flags start with -", c.fs.Arg(0))
	}
	if c.output != "pretty" && c.output != "json" {
		return fmt.Errorf("invalid -output %q: want pretty or json", c.output)
	}
	return nil
}

// dial connects to the admin socket.
func (c *adminCmd) dial() (*grpc.ClientConn, error) {
	if _, err := os.Stat(c.socketPath); err != nil {
		return nil, fmt.Errorf("cannot reach the server's admin socket %s (is plinth-server running? pass -socketPath): %w", c.socketPath, err)
	}
	return grpc.NewClient("unix://"+c.socketPath, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

// call dials the admin socket, runs f and prints its response: as JSON with
// -output json, else with pretty.
func call[M proto.Message](ctx context.Context, c *adminCmd, f func(context.Context, *grpc.ClientConn) (M, error), pretty func(M) error) error {
	conn, err := c.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	resp, err := f(ctx, conn)
	if err != nil {
		return rpcErr(err)
	}
	if c.output == "json" {
		return printJSON(resp)
	}
	return pretty(resp)
}

// printJSON prints m as SPIRE's CLI does with -output json.
func printJSON(m proto.Message) error {
	b, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(m)
	if err != nil {
		return err
	}
	fmt.Println(string(b))
	return nil
}

// rpcErr turns a gRPC status into a plain error message.
func rpcErr(err error) error {
	if st, ok := status.FromError(err); ok {
		return fmt.Errorf("%s (%s)", st.Message(), st.Code())
	}
	return err
}

// stringList is a repeatable flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

func parseID(flagName, s string) (*types.SPIFFEID, error) {
	id, err := spiffeid.FromString(s)
	if err != nil {
		return nil, fmt.Errorf("invalid -%s %q: %v", flagName, s, err)
	}
	return &types.SPIFFEID{TrustDomain: id.TrustDomain().Name(), Path: id.Path()}, nil
}

func idString(id *types.SPIFFEID) string {
	if id == nil {
		return ""
	}
	return "spiffe://" + id.TrustDomain + id.Path
}

func parseSelectors(ss []string) ([]*types.Selector, error) {
	var out []*types.Selector
	for _, s := range ss {
		t, v, ok := strings.Cut(s, ":")
		if !ok || t == "" || v == "" {
			return nil, fmt.Errorf("invalid -selector %q: want type:value (e.g. unix:uid:1000)", s)
		}
		out = append(out, &types.Selector{Type: t, Value: v})
	}
	return out, nil
}

func healthcheck(ctx context.Context, args []string) error {
	c := newAdminCmd("healthcheck")
	shallow := c.fs.Bool("shallow", false, "Perform a less stringent health check")
	verbose := c.fs.Bool("verbose", false, "Print verbose information")
	if err := c.parse(args); err != nil {
		return err
	}
	_ = shallow
	conn, err := c.dial()
	if err != nil {
		return errors.New("server is unhealthy: " + err.Error())
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return fmt.Errorf("server is unhealthy: unable to determine health: %w", rpcErr(err))
	}
	if resp.Status != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("server is unhealthy: %s", resp.Status)
	}
	if *verbose {
		fmt.Println("Checking server health...")
	}
	fmt.Println("Server is healthy.")
	return nil
}

func pemEncode(ders ...[]byte) string {
	var b strings.Builder
	for _, d := range ders {
		pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: d})
	}
	return b.String()
}
