package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"

	"github.com/plinth-id/plinth/adminapi"
	tpmattestor "github.com/plinth-id/plinth/attestors/tpm"
	"github.com/plinth-id/plinth/conf"
	"github.com/plinth-id/plinth/tpm/verify"
)

// tpmEventlogShow prints an event log: every event, the PCR values it
// extends to and the boot state it claims. Nothing is verified: there is
// no quote to replay against.
func tpmEventlogShow(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("tpm eventlog show", flag.ContinueOnError)
	output := fs.String("output", "pretty", "Desired output format (pretty, json)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: plinth-server tpm eventlog show [-output json] FILE (for example /sys/kernel/security/tpm0/binary_bios_measurements)")
	}
	raw, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return err
	}
	log, err := verify.ParseEventLog(raw)
	if err != nil {
		return fmt.Errorf("%s: %w", fs.Arg(0), err)
	}
	vals := log.PCRValues()
	_, st, err := verify.VerifyEventLog(raw, vals)
	if err != nil {
		return fmt.Errorf("%s: %w", fs.Arg(0), err)
	}
	if *output == "json" {
		return json.NewEncoder(os.Stdout).Encode(map[string]any{"events": len(log.Events), "crypto_agile": log.CryptoAgile, "boot_state": st})
	}
	bank := verify.BankNames(log.Banks)
	format := "SHA-1 (TCG 1.2)"
	if log.CryptoAgile {
		format = "crypto-agile"
	}
	fmt.Printf("%s: %s event log, banks %s, %d events\n\n", fs.Arg(0), format, strings.Join(bank, ", "), len(log.Events))
	fmt.Printf("%5s %4s  %-34s %-18s %s\n", "EVENT", "PCR", "TYPE", "DIGEST ("+st.Bank+")", "DATA")
	alg, _ := verify.ParseBank(st.Bank)
	for i := range log.Events {
		e := &log.Events[i]
		d := hex.EncodeToString(e.Digest(alg))
		if len(d) > 16 {
			d = d[:16] + "…"
		}
		fmt.Printf("%5d %4d  %-34s %-18s %s\n", e.Seq, e.PCR, e.Type, d, e.Describe())
	}
	fmt.Println("\nPCR values the log extends to (a quote must hold exactly these):")
	for _, b := range bank {
		a, _ := verify.ParseBank(b)
		for _, p := range slices.Sorted(maps.Keys(vals[a])) {
			fmt.Printf("  %-7s %2d  %x\n", b, p, vals[a][p])
		}
	}
	fmt.Println("\nBoot state the log claims (unverified here):")
	printBootState(st)
	return nil
}

func printBootState(st *verify.BootState) {
	line := func(k, v string) { fmt.Printf("  %-16s %s\n", k, v) }
	line("secure boot", fmt.Sprint(st.SecureBoot))
	line("firmware", st.Firmware)
	for _, db := range []struct {
		name  string
		certs []verify.Cert
	}{{"PK", st.PK}, {"KEK", st.KEK}, {"db", st.DB}} {
		for _, c := range db.certs {
			line(db.name, c.String())
		}
	}
	line("dbx", fmt.Sprintf("%d SHA-256 hashes, %d other entries", len(st.DBX), st.DBXOther))
	for _, a := range st.Authorities {
		line("authority", a.Variable+": "+a.Cert.String())
	}
	for i, d := range st.BootApps {
		line(fmt.Sprintf("boot app %d", i+1), st.Bank+":"+d)
	}
	line("loader", st.Loader)
	if st.Kernel != nil {
		line("kernel", st.Kernel.Path+" "+st.Bank+":"+st.Kernel.Digest)
	}
	if st.Initrd != nil {
		line("initrd", st.Initrd.Path+" "+st.Bank+":"+st.Initrd.Digest)
	}
	for _, f := range st.Files {
		line("file", st.Bank+":"+f.Digest+" (logged as "+f.Path+")")
	}
	for _, c := range st.KernelCmdlines {
		line("kernel cmdline", fmt.Sprintf("%q", c))
	}
	for _, n := range st.Notes {
		line("note", n)
	}
}

// bootState reads the boot state of an agent's last accepted attestation.
func bootState(ctx context.Context, c *adminapi.Client, id string) (*verify.BootState, error) {
	d, err := c.AgentDetails(ctx, id)
	if err != nil {
		return nil, rpcErr(err)
	}
	if !d.Attested {
		return nil, fmt.Errorf("agent %s is not attested", id)
	}
	for k, v := range d.Evidence {
		if k == tpmattestor.EvidenceBootState || strings.HasSuffix(k, "."+tpmattestor.EvidenceBootState) {
			st := new(verify.BootState)
			if err := json.Unmarshal([]byte(v), st); err != nil {
				return nil, fmt.Errorf("agent %s: stored boot state: %w", id, err)
			}
			return st, nil
		}
	}
	return nil, fmt.Errorf("agent %s has no measured boot evidence (was it attested with measured_boot on?)", id)
}

// tpmPolicyLearn writes a policy that the agent's last accepted boot
// passes: its Secure Boot state and databases at the top, its firmware,
// boot applications, kernel and command line as one reference set.
func tpmPolicyLearn(ctx context.Context, args []string) error {
	c := newAdminCmd("tpm policy learn")
	id := c.fs.String("agent", "", "The SPIFFE ID of the agent whose boot to learn from")
	name := c.fs.String("name", "learned", "The name of the policy written")
	ref := c.fs.String("reference", "", "The name of the reference set (default: the date and the agent's ID)")
	if err := c.parse(args); err != nil {
		return err
	}
	if *id == "" {
		return errors.New("-agent is required")
	}
	conn, err := c.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	st, err := bootState(ctx, adminapi.NewClient(conn), *id)
	if err != nil {
		return err
	}
	if *ref == "" {
		short := *id
		if i := strings.LastIndexByte(short, '/'); i >= 0 && len(short)-i > 13 {
			short = short[i+1 : i+13]
		}
		*ref = time.Now().UTC().Format("2006-01-02") + "-" + short
	}
	p := learn(*name, *ref, st)
	if err := p.Validate(); err != nil {
		return err
	}
	if reasons := p.Evaluate(st); len(reasons) > 0 {
		return fmt.Errorf("internal error: the learned policy fails its own boot: %s", strings.Join(reasons, "; "))
	}
	fmt.Printf("# Learned from %s (boot attested with bank %s).\n# Review before use; add further reference sets next to this one to roll firmware or kernels.\n", *id, st.Bank)
	os.Stdout.Write(conf.FormatBootPolicy(p))
	return nil
}

// learn builds the policy a boot state passes: every boot application, file
// and command line it measured.
func learn(name, ref string, st *verify.BootState) verify.Policy {
	sb := st.SecureBoot
	p := verify.Policy{Name: name}
	p.SecureBoot = &sb
	fps := func(cs []verify.Cert) []string {
		var out []string
		for _, c := range cs {
			out = append(out, c.SHA256)
		}
		return out
	}
	p.PK.Allowed, p.KEK.Allowed, p.DB.Allowed = fps(st.PK), fps(st.KEK), fps(st.DB)
	p.DBXContains = slices.Clone(st.DBX)
	r := verify.Reference{Name: ref}
	if st.Firmware != "" {
		r.Firmware = []string{st.Firmware}
	}
	r.BootApps = slices.Compact(slices.Sorted(slices.Values(st.BootApps)))
	for _, f := range st.Files {
		r.BootFiles = append(r.BootFiles, f.Digest)
	}
	r.BootFiles = slices.Compact(slices.Sorted(slices.Values(r.BootFiles)))
	r.Cmdlines = slices.Compact(slices.Sorted(slices.Values(st.KernelCmdlines)))
	p.References = []verify.Reference{r}
	return p
}

// tpmPolicyTest evaluates a policy file against every attested agent's last
// boot and reports which would fail and why; it changes nothing.
func tpmPolicyTest(ctx context.Context, args []string) error {
	c := newAdminCmd("tpm policy test")
	file := c.fs.String("policy", "", "The policy file to test")
	name := c.fs.String("name", "", "Test only this policy of the file")
	if err := c.parse(args); err != nil {
		return err
	}
	if *file == "" {
		return errors.New("-policy is required")
	}
	policies, err := conf.LoadBootPolicies(*file)
	if err != nil {
		return err
	}
	if *name != "" {
		policies = slices.DeleteFunc(policies, func(p verify.Policy) bool { return p.Name != *name })
		if len(policies) == 0 {
			return fmt.Errorf("%s has no policy %q", *file, *name)
		}
	}
	conn, err := c.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	agents, err := listAllAgents(ctx, agentv1.NewAgentClient(conn))
	if err != nil {
		return err
	}
	admin := adminapi.NewClient(conn)
	type result struct {
		Agent   string              `json:"agent"`
		Skipped string              `json:"skipped,omitempty"`
		Failed  map[string][]string `json:"failed,omitempty"`
	}
	var results []result
	failing, tested := 0, 0
	for _, id := range agents {
		r := result{Agent: id, Failed: map[string][]string{}}
		st, err := bootState(ctx, admin, id)
		if err != nil {
			r.Skipped = err.Error()
			results = append(results, r)
			continue
		}
		tested++
		for i := range policies {
			if reasons := policies[i].Evaluate(st); len(reasons) > 0 {
				r.Failed[policies[i].Name] = reasons
			}
		}
		if len(r.Failed) > 0 {
			failing++
		}
		results = append(results, r)
	}
	if c.output == "json" {
		return json.NewEncoder(os.Stdout).Encode(results)
	}
	fmt.Printf("Dry run of %s against %d attested %s with measured boot evidence: %d would fail.\n", *file, tested, plural(tested, "agent", "agents"), failing)
	for _, r := range results {
		switch {
		case r.Skipped != "":
			fmt.Printf("  skipped %s: %s\n", r.Agent, r.Skipped)
		case len(r.Failed) == 0:
			fmt.Printf("  pass    %s\n", r.Agent)
		default:
			for _, p := range slices.Sorted(maps.Keys(r.Failed)) {
				fmt.Printf("  FAIL    %s policy %s:\n", r.Agent, p)
				for _, why := range r.Failed[p] {
					fmt.Printf("            %s\n", why)
				}
			}
		}
	}
	return nil
}

// listAllAgents pages through ListAgents.
func listAllAgents(ctx context.Context, c agentv1.AgentClient) ([]string, error) {
	var ids []string
	token := ""
	for {
		resp, err := c.ListAgents(ctx, &agentv1.ListAgentsRequest{PageSize: 500, PageToken: token})
		if err != nil {
			return nil, rpcErr(err)
		}
		for _, a := range resp.Agents {
			ids = append(ids, "spiffe://"+a.Id.TrustDomain+a.Id.Path)
		}
		if token = resp.NextPageToken; token == "" {
			return ids, nil
		}
	}
}
