package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"github.com/plinth-id/plinth/adminapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func agentList(ctx context.Context, args []string) error {
	c := newAdminCmd("agent list")
	attType := c.fs.String("attestationType", "", "Filter by attestation type, like join_token or tpm")
	var sels stringList
	c.fs.Var(&sels, "selector", "A colon-delimited type:value selector. Can be used more than once")
	match := c.fs.String("matchSelectorsOn", "superset", "The match mode used when filtering by selectors. Options: exact, any, superset and subset")
	banned := c.fs.String("banned", "", "Filter based on banned status (true or false)")
	canReattest := c.fs.String("canReattest", "", "Filter based on whether the agent can re-attest (true or false)")
	expiresBefore := c.fs.String("expiresBefore", "", "Filter by expiration time (format: \"2006-01-02 15:04:05 -0700 -07\")")
	if err := c.parse(args); err != nil {
		return err
	}
	f := &agentv1.ListAgentsRequest_Filter{ByAttestationType: *attType}
	var err error
	if len(sels) > 0 {
		s, err := parseSelectors(sels)
		if err != nil {
			return err
		}
		m, ok := map[string]types.SelectorMatch_MatchBehavior{"exact": 0, "subset": 1, "superset": 2, "any": 3}[*match]
		if !ok {
			return fmt.Errorf("invalid -matchSelectorsOn %q: want exact, any, superset or subset", *match)
		}
		f.BySelectorMatch = &types.SelectorMatch{Selectors: s, Match: m}
	}
	if f.ByBanned, err = boolFlag("banned", *banned); err != nil {
		return err
	}
	if f.ByCanReattest, err = boolFlag("canReattest", *canReattest); err != nil {
		return err
	}
	if *expiresBefore != "" {
		t, err := time.Parse("2006-01-02 15:04:05 -0700 -07", *expiresBefore)
		if err != nil {
			return fmt.Errorf("invalid -expiresBefore %q: %v", *expiresBefore, err)
		}
		f.ByExpiresBefore = t.Format(time.RFC3339)
	}
	conn, err := c.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	resp := &agentv1.ListAgentsResponse{}
	req := &agentv1.ListAgentsRequest{Filter: f, PageSize: 1000}
	for {
		page, err := agentv1.NewAgentClient(conn).ListAgents(ctx, req)
		if err != nil {
			return rpcErr(err)
		}
		resp.Agents = append(resp.Agents, page.Agents...)
		if page.NextPageToken == "" {
			break
		}
		req.PageToken = page.NextPageToken
	}
	if c.output == "json" {
		return printJSON(resp)
	}
	if len(resp.Agents) == 0 {
		fmt.Println("No attested agents found")
		return nil
	}
	fmt.Printf("Found %d attested %s:\n", len(resp.Agents), plural(len(resp.Agents), "agent", "agents"))
	for _, a := range resp.Agents {
		printAgent(a)
	}
	return nil
}

func boolFlag(name, v string) (*wrapperspb.BoolValue, error) {
	switch v {
	case "":
		return nil, nil
	case "true":
		return wrapperspb.Bool(true), nil
	case "false":
		return wrapperspb.Bool(false), nil
	}
	return nil, fmt.Errorf("invalid -%s %q: want true or false", name, v)
}

func printAgent(a *types.Agent) {
	fmt.Println()
	row := func(k, v string) { fmt.Printf("%-17s: %s\n", k, v) }
	row("SPIFFE ID", idString(a.Id))
	row("Attestation type", a.AttestationType)
	row("Expiration time", time.Unix(a.X509SvidExpiresAt, 0).UTC().String())
	row("Serial number", a.X509SvidSerialNumber)
	row("Can re-attest", fmt.Sprint(a.CanReattest))
	if a.Banned {
		row("Banned", "true")
	}
	for _, s := range a.Selectors {
		row("Selector", s.Type+":"+s.Value)
	}
}

// agentIDCmd runs the agent commands that take one -spiffeID.
func agentIDCmd(ctx context.Context, name string, args []string, call func(context.Context, agentv1.AgentClient, *types.SPIFFEID) (string, error)) error {
	c := newAdminCmd(name)
	id := c.fs.String("spiffeID", "", "The SPIFFE ID of the agent")
	if err := c.parse(args); err != nil {
		return err
	}
	if *id == "" {
		return errors.New("-spiffeID is required")
	}
	pid, err := parseID("spiffeID", *id)
	if err != nil {
		return err
	}
	conn, err := c.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	out, err := call(ctx, agentv1.NewAgentClient(conn), pid)
	if err != nil {
		return rpcErr(err)
	}
	if c.output == "json" && out != "" {
		fmt.Printf("{\"result\": %q}\n", out)
	} else if out != "" {
		fmt.Println(out)
	}
	return nil
}

func agentShow(ctx context.Context, args []string) error {
	c := newAdminCmd("agent show")
	id := c.fs.String("spiffeID", "", "The SPIFFE ID of the agent")
	if err := c.parse(args); err != nil {
		return err
	}
	if *id == "" {
		return errors.New("-spiffeID is required")
	}
	pid, err := parseID("spiffeID", *id)
	if err != nil {
		return err
	}
	conn, err := c.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	a, getErr := agentv1.NewAgentClient(conn).GetAgent(ctx, &agentv1.GetAgentRequest{Id: pid})
	if getErr != nil && status.Code(getErr) != codes.NotFound {
		return rpcErr(getErr)
	}
	if c.output == "json" && getErr == nil {
		return printJSON(a)
	}
	// What SPIRE's API cannot say: the evidence of the last accepted
	// attestation and the latest decisions, refusals included.
	details, err := adminapi.NewClient(conn).AgentDetails(ctx, *id)
	if err != nil {
		return rpcErr(err)
	}
	if c.output == "json" {
		return json.NewEncoder(os.Stdout).Encode(details)
	}
	if getErr != nil {
		fmt.Printf("No attested agent with SPIFFE ID %s\n", *id)
	} else {
		fmt.Print("Found an attested agent given its SPIFFE ID\n")
		printAgent(a)
	}
	if len(details.Evidence) > 0 {
		fmt.Println("\nEvidence of the last accepted attestation:")
		keys := make([]string, 0, len(details.Evidence))
		for k := range details.Evidence {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if !strings.HasSuffix(k, "_json") { // machine-readable detail (tpm policy learn reads it)
				fmt.Printf("  %-26s %s\n", k, details.Evidence[k])
			}
		}
	}
	if len(details.Decisions) > 0 {
		fmt.Println("\nLatest decisions (newest first):")
		for _, d := range details.Decisions {
			fmt.Printf("  %s  %-7s %-6s %s\n", d.Time.Format(time.RFC3339), d.Kind, d.Decision, d.Reason)
		}
	}
	if getErr != nil {
		return errors.New("agent not attested")
	}
	return nil
}

func agentEvict(ctx context.Context, args []string) error {
	return agentIDCmd(ctx, "agent evict", args, func(ctx context.Context, c agentv1.AgentClient, id *types.SPIFFEID) (string, error) {
		_, err := c.DeleteAgent(ctx, &agentv1.DeleteAgentRequest{Id: id})
		return "Agent evicted successfully", err
	})
}

func agentBan(ctx context.Context, args []string) error {
	return agentIDCmd(ctx, "agent ban", args, func(ctx context.Context, c agentv1.AgentClient, id *types.SPIFFEID) (string, error) {
		_, err := c.BanAgent(ctx, &agentv1.BanAgentRequest{Id: id})
		return "Agent banned successfully", err
	})
}

func agentCount(ctx context.Context, args []string) error {
	c := newAdminCmd("agent count")
	if err := c.parse(args); err != nil {
		return err
	}
	return call(ctx, c, func(ctx context.Context, conn *grpc.ClientConn) (*agentv1.CountAgentsResponse, error) {
		return agentv1.NewAgentClient(conn).CountAgents(ctx, &agentv1.CountAgentsRequest{})
	}, func(resp *agentv1.CountAgentsResponse) error {
		fmt.Printf("%d attested %s\n", resp.Count, plural(int(resp.Count), "agent", "agents"))
		return nil
	})
}

func tokenGenerate(ctx context.Context, args []string) error {
	c := newAdminCmd("token generate")
	id := c.fs.String("spiffeID", "", "Additional SPIFFE ID to assign the token owner (optional)")
	ttl := c.fs.Int("ttl", 600, "Token TTL in seconds")
	if err := c.parse(args); err != nil {
		return err
	}
	req := &agentv1.CreateJoinTokenRequest{Ttl: int32(*ttl)}
	if *id != "" {
		var err error
		if req.AgentId, err = parseID("spiffeID", *id); err != nil {
			return err
		}
	}
	return call(ctx, c, func(ctx context.Context, conn *grpc.ClientConn) (*types.JoinToken, error) {
		return agentv1.NewAgentClient(conn).CreateJoinToken(ctx, req)
	}, func(tok *types.JoinToken) error {
		fmt.Printf("Token: %s\n", tok.Value)
		return nil
	})
}

func bundleShow(ctx context.Context, args []string) error {
	c := newAdminCmd("bundle show")
	format := c.fs.String("format", "pem", "The format to show the bundle (only pem supported)")
	if err := c.parse(args); err != nil {
		return err
	}
	if *format != "pem" {
		return fmt.Errorf("invalid -format %q: only pem is supported", *format)
	}
	return call(ctx, c, func(ctx context.Context, conn *grpc.ClientConn) (*types.Bundle, error) {
		return bundlev1.NewBundleClient(conn).GetBundle(ctx, &bundlev1.GetBundleRequest{})
	}, func(b *types.Bundle) error {
		for _, a := range b.X509Authorities {
			fmt.Print(pemEncode(a.Asn1))
		}
		return nil
	})
}

func bundleCount(ctx context.Context, args []string) error {
	c := newAdminCmd("bundle count")
	if err := c.parse(args); err != nil {
		return err
	}
	return call(ctx, c, func(ctx context.Context, conn *grpc.ClientConn) (*bundlev1.CountBundlesResponse, error) {
		return bundlev1.NewBundleClient(conn).CountBundles(ctx, &bundlev1.CountBundlesRequest{})
	}, func(resp *bundlev1.CountBundlesResponse) error {
		fmt.Printf("%d %s\n", resp.Count, plural(int(resp.Count), "bundle", "bundles"))
		return nil
	})
}

func x509Mint(ctx context.Context, args []string) error {
	c := newAdminCmd("x509 mint")
	id := c.fs.String("spiffeID", "", "SPIFFE ID of the X509-SVID")
	ttl := c.fs.Duration("ttl", 0, "TTL of the X509-SVID")
	var dns stringList
	c.fs.Var(&dns, "dns", "DNS name that will be included in SVID. Can be used more than once")
	write := c.fs.String("write", "", "Directory to write output to instead of stdout")
	if err := c.parse(args); err != nil {
		return err
	}
	sid, err := spiffeid.FromString(*id)
	if err != nil {
		return fmt.Errorf("invalid -spiffeID %q: %v", *id, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{sid.URL()}, DNSNames: dns}, key)
	if err != nil {
		return err
	}
	conn, err := c.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	resp, err := svidv1.NewSVIDClient(conn).MintX509SVID(ctx, &svidv1.MintX509SVIDRequest{Csr: csr, Ttl: int32(ttl.Seconds())})
	if err != nil {
		return rpcErr(err)
	}
	b, err := bundlev1.NewBundleClient(conn).GetBundle(ctx, &bundlev1.GetBundleRequest{})
	if err != nil {
		return rpcErr(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	svidPEM := pemEncode(resp.Svid.CertChain...)
	keyPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	var bundle [][]byte
	for _, a := range b.X509Authorities {
		bundle = append(bundle, a.Asn1)
	}
	bundlePEM := pemEncode(bundle...)
	if c.output == "json" {
		fmt.Printf("{\"svid\": %q, \"key\": %q, \"bundle\": %q}\n", svidPEM, keyPEM, bundlePEM)
		return nil
	}
	if *write == "" {
		fmt.Printf("X509-SVID:\n%s\nPrivate key:\n%s\nRoot CAs:\n%s", svidPEM, keyPEM, bundlePEM)
		return nil
	}
	for name, data := range map[string]string{"svid.pem": svidPEM, "key.pem": keyPEM, "bundle.pem": bundlePEM} {
		if err := os.WriteFile(filepath.Join(*write, name), []byte(data), 0o600); err != nil {
			return err
		}
	}
	fmt.Printf("X509-SVID written to %s\nPrivate key written to %s\nRoot CAs written to %s\n", filepath.Join(*write, "svid.pem"), filepath.Join(*write, "key.pem"), filepath.Join(*write, "bundle.pem"))
	return nil
}

func jwtMint(ctx context.Context, args []string) error {
	c := newAdminCmd("jwt mint")
	id := c.fs.String("spiffeID", "", "SPIFFE ID of the JWT-SVID")
	ttl := c.fs.Duration("ttl", 0, "TTL of the JWT-SVID")
	var aud stringList
	c.fs.Var(&aud, "audience", "Audience claim that will be included in the SVID. Can be used more than once")
	write := c.fs.String("write", "", "File to write token to instead of stdout")
	if err := c.parse(args); err != nil {
		return err
	}
	pid, err := parseID("spiffeID", *id)
	if err != nil {
		return err
	}
	if len(aud) == 0 {
		return errors.New("at least one -audience is required")
	}
	conn, err := c.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	resp, err := svidv1.NewSVIDClient(conn).MintJWTSVID(ctx, &svidv1.MintJWTSVIDRequest{Id: pid, Audience: aud, Ttl: int32(ttl.Seconds())})
	if err != nil {
		return rpcErr(err)
	}
	if c.output == "json" {
		return printJSON(resp)
	}
	if *write != "" {
		return os.WriteFile(*write, []byte(resp.Svid.Token), 0o600)
	}
	fmt.Println(resp.Svid.Token)
	return nil
}
