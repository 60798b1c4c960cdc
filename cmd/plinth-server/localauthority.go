package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/plinth-id/plinth/adminapi"
	localauthorityv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/localauthority/v1"
	"google.golang.org/protobuf/proto"
)

// localAuthority builds the localauthority commands of one kind (x509,
// jwt): show, prepare, activate, taint, revoke, as in spire-server.
func localAuthority(kind string) map[string]command {
	upper := map[string]string{"x509": "X.509", "jwt": "JWT"}[kind]
	return map[string]command{
		"localauthority " + kind + " show":     {"Shows the local " + upper + " authorities and where their keys live", func(ctx context.Context, args []string) error { return authorityShow(ctx, kind, args) }},
		"localauthority " + kind + " prepare":  {"Prepares a new local " + upper + " authority (published, not yet signing)", func(ctx context.Context, args []string) error { return authorityStep(ctx, kind, "prepare", args) }},
		"localauthority " + kind + " activate": {"Activates the prepared local " + upper + " authority", func(ctx context.Context, args []string) error { return authorityStep(ctx, kind, "activate", args) }},
		"localauthority " + kind + " taint":    {"Taints an old local " + upper + " authority: agents replace what it signed at once", func(ctx context.Context, args []string) error { return authorityStep(ctx, kind, "taint", args) }},
		"localauthority " + kind + " revoke":   {"Revokes a tainted local " + upper + " authority: it leaves the bundle", func(ctx context.Context, args []string) error { return authorityStep(ctx, kind, "revoke", args) }},
	}
}

func authorityShow(ctx context.Context, kind string, args []string) error {
	c := newAdminCmd("localauthority " + kind + " show")
	if err := c.parse(args); err != nil {
		return err
	}
	conn, err := c.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	resp, err := adminapi.NewClient(conn).Authorities(ctx, kind)
	if err != nil {
		return rpcErr(err)
	}
	if c.output == "json" {
		return json.NewEncoder(os.Stdout).Encode(resp)
	}
	for _, a := range resp.Authorities {
		state := a.Status
		if a.Tainted {
			state += ", tainted"
		}
		fmt.Printf("%s authority %s (%s)\n", strings.ToUpper(kind[:1])+kind[1:], a.ID, state)
		fmt.Printf("  Valid          : %s to %s\n", a.NotBefore.UTC().Format(time.RFC3339), a.NotAfter.UTC().Format(time.RFC3339))
		if a.KeyID == "" {
			fmt.Printf("  Key            : replaced (the slot signs for a newer authority); published until it expires\n\n")
			continue
		}
		fmt.Printf("  Key            : %s (slot %s)\n", a.KeyID, a.Slot)
		if a.Backend != "" {
			fmt.Printf("  Lives in       : %s (%s)\n", a.Location, a.Backend)
			fmt.Printf("  Generated there: %v; cannot be extracted: %v\n", a.GeneratedInside, a.NonExtractable)
			var keys []string
			for k := range a.Attributes {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				fmt.Printf("    %s=%s\n", k, a.Attributes[k])
			}
		}
		fmt.Println()
	}
	return nil
}

func authorityStep(ctx context.Context, kind, step string, args []string) error {
	c := newAdminCmd("localauthority " + kind + " " + step)
	id := c.fs.String("authorityID", "", "The authority ID (X.509: the hex SKID of its certificate; JWT: the key ID)")
	if err := c.parse(args); err != nil {
		return err
	}
	if step != "prepare" && *id == "" {
		return errors.New("-authorityID is required (see `localauthority " + kind + " show`)")
	}
	conn, err := c.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	client := localauthorityv1.NewLocalAuthorityClient(conn)
	var resp proto.Message
	switch kind + " " + step {
	case "x509 prepare":
		resp, err = client.PrepareX509Authority(ctx, &localauthorityv1.PrepareX509AuthorityRequest{})
	case "x509 activate":
		resp, err = client.ActivateX509Authority(ctx, &localauthorityv1.ActivateX509AuthorityRequest{AuthorityId: *id})
	case "x509 taint":
		resp, err = client.TaintX509Authority(ctx, &localauthorityv1.TaintX509AuthorityRequest{AuthorityId: *id})
	case "x509 revoke":
		resp, err = client.RevokeX509Authority(ctx, &localauthorityv1.RevokeX509AuthorityRequest{AuthorityId: *id})
	case "jwt prepare":
		resp, err = client.PrepareJWTAuthority(ctx, &localauthorityv1.PrepareJWTAuthorityRequest{})
	case "jwt activate":
		resp, err = client.ActivateJWTAuthority(ctx, &localauthorityv1.ActivateJWTAuthorityRequest{AuthorityId: *id})
	case "jwt taint":
		resp, err = client.TaintJWTAuthority(ctx, &localauthorityv1.TaintJWTAuthorityRequest{AuthorityId: *id})
	case "jwt revoke":
		resp, err = client.RevokeJWTAuthority(ctx, &localauthorityv1.RevokeJWTAuthorityRequest{AuthorityId: *id})
	}
	if err != nil {
		return rpcErr(err)
	}
	if c.output == "json" {
		return printJSON(resp)
	}
	var st *localauthorityv1.AuthorityState
	switch r := resp.(type) {
	case interface {
		GetPreparedAuthority() *localauthorityv1.AuthorityState
	}:
		st = r.GetPreparedAuthority()
	case interface {
		GetActivatedAuthority() *localauthorityv1.AuthorityState
	}:
		st = r.GetActivatedAuthority()
	case interface {
		GetTaintedAuthority() *localauthorityv1.AuthorityState
	}:
		st = r.GetTaintedAuthority()
	case interface {
		GetRevokedAuthority() *localauthorityv1.AuthorityState
	}:
		st = r.GetRevokedAuthority()
	}
	past := map[string]string{"prepare": "Prepared", "activate": "Activated", "taint": "Tainted", "revoke": "Revoked"}[step]
	fmt.Printf("%s %s authority:\n  Authority ID : %s\n  Expires at   : %s\n", past, kind, st.GetAuthorityId(), time.Unix(st.GetExpiresAt(), 0).UTC().Format(time.RFC3339))
	return nil
}
