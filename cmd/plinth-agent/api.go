package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/plinth-id/plinth/conf"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
)

// apiCmd holds the flags every `api` command shares.
type apiCmd struct {
	fs         *flag.FlagSet
	socketPath string
	timeout    time.Duration
	output     string
}

func newAPICmd(name string) *apiCmd {
	c := &apiCmd{fs: flag.NewFlagSet(name, flag.ContinueOnError)}
	c.fs.StringVar(&c.socketPath, "socketPath", conf.DefaultAgentSocketPath, "Path to the SPIFFE Workload API socket")
	c.fs.DurationVar(&c.timeout, "timeout", 5*time.Second, "Time to wait for a response")
	c.fs.StringVar(&c.output, "output", "pretty", "Desired output format (pretty, json)")
	return c
}

func (c *apiCmd) parse(args []string) error {
	if err := c.fs.Parse(args); err != nil {
		return err
	}
	if c.output != "pretty" && c.output != "json" {
		return fmt.Errorf("invalid -output %q: want pretty or json", c.output)
	}
	return nil
}

func (c *apiCmd) client(ctx context.Context) (*workloadapi.Client, error) {
	return workloadapi.New(ctx, workloadapi.WithAddr("unix://"+c.socketPath))
}

func fetchX509(ctx context.Context, args []string) error {
	c := newAPICmd("api fetch x509")
	write := c.fs.String("write", "", "Write SVID data to the specified path (optional)")
	if err := c.parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	client, err := c.client(ctx)
	if err != nil {
		return err
	}
	defer client.Close()
	start := time.Now()
	x, err := client.FetchX509Context(ctx)
	if err != nil {
		return fmt.Errorf("could not fetch X509-SVIDs from %s: %w", c.socketPath, err)
	}
	took := time.Since(start)
	if c.output == "json" {
		var out []map[string]any
		for _, s := range x.SVIDs {
			certs, key, _ := s.Marshal()
			out = append(out, map[string]any{"spiffe_id": s.ID.String(), "hint": s.Hint, "x509_svid": string(certs), "x509_svid_key": string(key), "expires_at": s.Certificates[0].NotAfter.Unix()})
		}
		return json.NewEncoder(os.Stdout).Encode(map[string]any{"svids": out})
	}
	fmt.Printf("Received %d svid after %s\n", len(x.SVIDs), took.Round(time.Microsecond))
	for i, s := range x.SVIDs {
		fmt.Printf("\nSPIFFE ID:\t\t%s\n", s.ID)
		if s.Hint != "" {
			fmt.Printf("Hint:\t\t\t%s\n", s.Hint)
		}
		fmt.Printf("SVID Valid After:\t%s\nSVID Valid Until:\t%s\n", s.Certificates[0].NotBefore, s.Certificates[0].NotAfter)
		b, err := x.Bundles.GetX509BundleForTrustDomain(s.ID.TrustDomain())
		if err == nil {
			for j, ca := range b.X509Authorities() {
				fmt.Printf("CA #%d Valid After:\t%s\nCA #%d Valid Until:\t%s\n", j+1, ca.NotBefore, j+1, ca.NotAfter)
			}
		}
		if *write != "" {
			certs, key, err := s.Marshal()
			if err != nil {
				return err
			}
			var bundle []byte
			if b != nil {
				bundle, _ = b.Marshal()
			}
			files := map[string][]byte{fmt.Sprintf("svid.%d.pem", i): certs, fmt.Sprintf("svid.%d.key", i): key, fmt.Sprintf("bundle.%d.pem", i): bundle}
			for name, data := range files {
				p := filepath.Join(*write, name)
				if err := os.WriteFile(p, data, 0o600); err != nil {
					return err
				}
				fmt.Printf("Writing %s\n", p)
			}
		}
	}
	return nil
}

func fetchJWT(ctx context.Context, args []string) error {
	c := newAPICmd("api fetch jwt")
	audience := c.fs.String("audience", "", "comma separated list of audience values")
	spiffeID := c.fs.String("spiffeID", "", "SPIFFE ID subject (optional)")
	if err := c.parse(args); err != nil {
		return err
	}
	if *audience == "" {
		return errors.New("-audience must be specified")
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	client, err := c.client(ctx)
	if err != nil {
		return err
	}
	defer client.Close()
	auds := strings.Split(*audience, ",")
	params := jwtsvid.Params{Audience: auds[0], ExtraAudiences: auds[1:]}
	if *spiffeID != "" {
		if params.Subject, err = spiffeid.FromString(*spiffeID); err != nil {
			return fmt.Errorf("invalid -spiffeID: %w", err)
		}
	}
	svids, err := client.FetchJWTSVIDs(ctx, params)
	if err != nil {
		return fmt.Errorf("could not fetch JWT-SVID from %s: %w", c.socketPath, err)
	}
	bundles, err := client.FetchJWTBundles(ctx)
	if err != nil {
		return fmt.Errorf("could not fetch JWT bundles: %w", err)
	}
	if c.output == "json" {
		var out []map[string]any
		for _, s := range svids {
			out = append(out, map[string]any{"spiffe_id": s.ID.String(), "svid": s.Marshal(), "hint": s.Hint, "expires_at": s.Expiry.Unix()})
		}
		return json.NewEncoder(os.Stdout).Encode(map[string]any{"svids": out})
	}
	for _, s := range svids {
		fmt.Printf("token(%s):\n\t%s\n", s.ID, s.Marshal())
	}
	for _, b := range bundles.Bundles() {
		jwks, _ := b.Marshal()
		fmt.Printf("bundle(%s):\n\t%s\n", b.TrustDomain().IDString(), jwks)
	}
	return nil
}

func validateJWT(ctx context.Context, args []string) error {
	c := newAPICmd("api validate jwt")
	audience := c.fs.String("audience", "", "expected audience value")
	svid := c.fs.String("svid", "", "JWT SVID")
	if err := c.parse(args); err != nil {
		return err
	}
	if *audience == "" || *svid == "" {
		return errors.New("-audience and -svid must be specified")
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	client, err := c.client(ctx)
	if err != nil {
		return err
	}
	defer client.Close()
	s, err := client.ValidateJWTSVID(ctx, *svid, *audience)
	if err != nil {
		return fmt.Errorf("SVID is not valid: %w", err)
	}
	if c.output == "json" {
		return json.NewEncoder(os.Stdout).Encode(map[string]any{"spiffe_id": s.ID.String(), "claims": s.Claims})
	}
	claims, _ := json.Marshal(s.Claims)
	fmt.Printf("SVID is valid.\nSPIFFE ID : %s\nClaims    : %s\n", s.ID, claims)
	return nil
}

func watch(ctx context.Context, args []string) error {
	c := newAPICmd("api watch")
	if err := c.parse(args); err != nil {
		return err
	}
	client, err := c.client(ctx)
	if err != nil {
		return err
	}
	defer client.Close()
	err = client.WatchX509Context(ctx, watcher{output: c.output})
	if ctx.Err() != nil {
		return nil
	}
	return err
}

type watcher struct{ output string }

func (w watcher) OnX509ContextUpdate(x *workloadapi.X509Context) {
	if w.output == "json" {
		var ids []string
		for _, s := range x.SVIDs {
			ids = append(ids, s.ID.String())
		}
		json.NewEncoder(os.Stdout).Encode(map[string]any{"time": time.Now().UTC(), "spiffe_ids": ids})
		return
	}
	fmt.Printf("Received %d svid(s) at %s\n", len(x.SVIDs), time.Now().Format(time.RFC3339))
	for _, s := range x.SVIDs {
		fmt.Printf("  %s (valid until %s)\n", s.ID, s.Certificates[0].NotAfter.Format(time.RFC3339))
	}
}

func (w watcher) OnX509ContextWatchError(err error) {
	fmt.Fprintf(os.Stderr, "Watch error: %v\n", err)
}

// healthcheck asks the agent's Workload API socket for its health.
func healthcheck(ctx context.Context, args []string) error {
	c := newAPICmd("healthcheck")
	c.fs.Bool("shallow", false, "Perform a less stringent health check")
	verbose := c.fs.Bool("verbose", false, "Print verbose information")
	if err := c.parse(args); err != nil {
		return err
	}
	conn, err := grpc.NewClient("unix://"+c.socketPath, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return fmt.Errorf("agent is unhealthy: unable to determine health: %v", err)
	}
	if resp.Status != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("agent is unhealthy: %s", resp.Status)
	}
	if *verbose {
		fmt.Println("Checking agent health...")
	}
	fmt.Println("Agent is healthy.")
	return nil
}
