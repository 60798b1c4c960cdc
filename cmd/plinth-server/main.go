// Command plinth-server is the Plinth server: the CA of one trust domain and
// its admin CLI. Commands and flags follow spire-server's.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// command is one CLI command: a name (possibly two words) and what it does.
type command struct {
	synopsis string
	run      func(ctx context.Context, args []string) error
}

// commands is every command, by name.
var commands = withLocalAuthority(map[string]command{
	"run":               {"Runs the server", runServer},
	"healthcheck":       {"Determines server health status", healthcheck},
	"entry create":      {"Creates registration entries", entryCreate},
	"entry show":        {"Displays configured registration entries", entryShow},
	"entry update":      {"Updates registration entries", entryUpdate},
	"entry delete":      {"Deletes registration entries", entryDelete},
	"entry count":       {"Count registration entries", entryCount},
	"agent list":        {"Lists attested agents and their SPIFFE IDs", agentList},
	"agent show":        {"Shows the details of an attested agent given its SPIFFE ID", agentShow},
	"agent count":       {"Count attested agents", agentCount},
	"agent evict":       {"Evicts an attested agent given its SPIFFE ID", agentEvict},
	"agent ban":         {"Ban an attested agent given its SPIFFE ID", agentBan},
	"token generate":    {"Generates a join token", tokenGenerate},
	"bundle show":       {"Prints server CA bundle to stdout", bundleShow},
	"bundle count":      {"Count bundles", bundleCount},
	"x509 mint":         {"Mints an X509-SVID", x509Mint},
	"jwt mint":          {"Mints a JWT-SVID", jwtMint},
	"tpm enroll":        {"Enrolls TPM endorsement keys (by hash, certificate, public key or file)", tpmEnroll},
	"tpm unenroll":      {"Removes an enrolled TPM endorsement key", tpmUnenroll},
	"tpm list":          {"Lists enrolled TPM endorsement keys", tpmList},
	"tpm eventlog show": {"Prints a TCG event log: events, the PCR values they extend to, the boot state they claim", tpmEventlogShow},
	"tpm policy learn":  {"Writes a measured-boot policy that an agent's last attested boot passes", tpmPolicyLearn},
	"tpm policy test":   {"Dry run: which attested agents a measured-boot policy file would fail, and why", tpmPolicyTest},
})

// withLocalAuthority adds the localauthority commands of both kinds.
func withLocalAuthority(m map[string]command) map[string]command {
	for _, kind := range []string{"x509", "jwt"} {
		for name, c := range localAuthority(kind) {
			m[name] = c
		}
	}
	return m
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(dispatch(ctx, os.Args[1:]))
}

func dispatch(ctx context.Context, args []string) int {
	for n := 3; n >= 1; n-- {
		if len(args) < n {
			continue
		}
		if c, ok := commands[strings.Join(args[:n], " ")]; ok {
			if err := c.run(ctx, args[n:]); err != nil {
				fmt.Fprintln(os.Stderr, "Error:", err)
				return 1
			}
			return 0
		}
	}
	usage(args)
	return 1
}

func usage(args []string) {
	prefix := ""
	if len(args) > 0 {
		prefix = args[0] + " "
	}
	var names []string
	for n := range commands {
		if strings.HasPrefix(n+" ", prefix) || prefix == "" {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		for n := range commands {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	fmt.Fprintln(os.Stderr, "Usage: plinth-server <command> [flags]\n\nAvailable commands:")
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "    %-18s %s\n", n, commands[n].synopsis)
	}
}
