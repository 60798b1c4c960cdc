// Package api holds the server's gRPC handlers: SPIRE's public server API
// (agent.v1, entry.v1, svid.v1, bundle.v1) and Plinth's small notify service
// beside it. Handlers are thin: they validate input, call the CA, the
// datastore and the entry index, and map errors to gRPC status codes.
// Who may call what is decided before a handler runs (see server/authz and
// Methods).
package api

import (
	"context"
	"log/slog"
	"time"

	"github.com/plinth-id/plinth/adminapi"
	"github.com/plinth-id/plinth/attestors"
	"github.com/plinth-id/plinth/notify"
	"github.com/plinth-id/plinth/server/authz"
	"github.com/plinth-id/plinth/server/ca"
	"github.com/plinth-id/plinth/server/datastore"
	"github.com/plinth-id/plinth/server/entries"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	localauthorityv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/localauthority/v1"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"google.golang.org/grpc"
)

// Handlers serves every API. Build it with its fields set, then Register.
type Handlers struct {
	TrustDomain spiffeid.TrustDomain
	Store       *datastore.Store
	CA          *ca.CA
	Entries     *entries.Index
	// NodeAttestors by attestation type (`join_token`).
	NodeAttestors map[string]attestors.NodeAttestor
	// AgentTTL is the agent SVID lifetime (0 = the CA's X509-SVID default).
	AgentTTL time.Duration
	// AttestTimeout bounds one AttestAgent stream, challenges included.
	AttestTimeout time.Duration
	Clock         func() time.Time
	Log           *slog.Logger
}

// Register registers every service on s.
func (h *Handlers) Register(s grpc.ServiceRegistrar) {
	if h.Log == nil {
		h.Log = slog.New(slog.DiscardHandler)
	}
	agentv1.RegisterAgentServer(s, &agentServer{h: h})
	entryv1.RegisterEntryServer(s, &entryServer{h: h})
	svidv1.RegisterSVIDServer(s, &svidServer{h: h})
	bundlev1.RegisterBundleServer(s, &bundleServer{h: h})
	s.RegisterService(&notify.ServiceDesc, &notifyServer{h: h})
	s.RegisterService(&adminapi.EnrollmentServiceDesc, &enrollServer{h: h})
	s.RegisterService(&adminapi.AuthorityServiceDesc, &authorityServer{h: h})
	s.RegisterService(&adminapi.AgentServiceDesc, &agentDetailsServer{h: h})
	localauthorityv1.RegisterLocalAuthorityServer(s, &localAuthorityServer{h: h})
}

func (h *Handlers) now() time.Time {
	if h.Clock != nil {
		return h.Clock()
	}
	return time.Now()
}

func (h *Handlers) serverID() spiffeid.ID {
	id, _ := spiffeid.FromPath(h.TrustDomain, "/spire/server")
	return id
}

// audit records a decision; a failure to record is logged, never fatal.
// The record is written even when ctx has ended: a call refused because it
// timed out or was cancelled is a decision too.
func (h *Handlers) audit(ctx context.Context, kind, subject, decision, reason string, details map[string]string) {
	r := &datastore.AuditRecord{Time: h.now().Unix(), Kind: kind, Subject: subject, Decision: decision, Reason: reason, Details: details}
	if err := h.Store.AppendAudit(context.WithoutCancel(ctx), r); err != nil {
		h.Log.Error("could not write audit record", "kind", kind, "subject", subject, "error", err)
	}
}

// Methods is the authorization table: every method served, and who may call it.
var Methods = map[string]authz.Role{
	"/spire.api.server.agent.v1.Agent/AttestAgent":     authz.Anyone,
	"/spire.api.server.agent.v1.Agent/RenewAgent":      authz.Agent,
	"/spire.api.server.agent.v1.Agent/PostStatus":      authz.Agent,
	"/spire.api.server.agent.v1.Agent/CountAgents":     authz.Admin,
	"/spire.api.server.agent.v1.Agent/ListAgents":      authz.Admin,
	"/spire.api.server.agent.v1.Agent/GetAgent":        authz.Admin,
	"/spire.api.server.agent.v1.Agent/DeleteAgent":     authz.Admin,
	"/spire.api.server.agent.v1.Agent/BanAgent":        authz.Admin,
	"/spire.api.server.agent.v1.Agent/CreateJoinToken": authz.Admin,

	"/spire.api.server.entry.v1.Entry/CountEntries":          authz.Admin,
	"/spire.api.server.entry.v1.Entry/ListEntries":           authz.Admin,
	"/spire.api.server.entry.v1.Entry/GetEntry":              authz.Admin,
	"/spire.api.server.entry.v1.Entry/BatchCreateEntry":      authz.Admin,
	"/spire.api.server.entry.v1.Entry/BatchUpdateEntry":      authz.Admin,
	"/spire.api.server.entry.v1.Entry/BatchDeleteEntry":      authz.Admin,
	"/spire.api.server.entry.v1.Entry/GetAuthorizedEntries":  authz.Agent,
	"/spire.api.server.entry.v1.Entry/SyncAuthorizedEntries": authz.Agent,

	"/spire.api.server.svid.v1.SVID/MintX509SVID":     authz.Admin,
	"/spire.api.server.svid.v1.SVID/MintJWTSVID":      authz.Admin,
	"/spire.api.server.svid.v1.SVID/BatchNewX509SVID": authz.Agent,
	"/spire.api.server.svid.v1.SVID/NewJWTSVID":       authz.Agent,

	"/spire.api.server.bundle.v1.Bundle/GetBundle":            authz.Anyone,
	"/spire.api.server.bundle.v1.Bundle/CountBundles":         authz.Admin,
	"/spire.api.server.bundle.v1.Bundle/ListFederatedBundles": authz.Admin | authz.Agent,
	"/spire.api.server.bundle.v1.Bundle/GetFederatedBundle":   authz.Admin | authz.Agent,

	notify.WatchMethod: authz.Agent,

	adminapi.EnrollMethod:         authz.Admin,
	adminapi.UnenrollMethod:       authz.Admin,
	adminapi.EnrollmentListMethod: authz.Admin,

	adminapi.AuthorityListMethod: authz.Admin,
	adminapi.AgentDetailsMethod:  authz.Admin,

	"/spire.api.server.localauthority.v1.LocalAuthority/GetX509AuthorityState": authz.Admin,
	"/spire.api.server.localauthority.v1.LocalAuthority/PrepareX509Authority":  authz.Admin,
	"/spire.api.server.localauthority.v1.LocalAuthority/ActivateX509Authority": authz.Admin,
	"/spire.api.server.localauthority.v1.LocalAuthority/TaintX509Authority":    authz.Admin,
	"/spire.api.server.localauthority.v1.LocalAuthority/RevokeX509Authority":   authz.Admin,
	"/spire.api.server.localauthority.v1.LocalAuthority/GetJWTAuthorityState":  authz.Admin,
	"/spire.api.server.localauthority.v1.LocalAuthority/PrepareJWTAuthority":   authz.Admin,
	"/spire.api.server.localauthority.v1.LocalAuthority/ActivateJWTAuthority":  authz.Admin,
	"/spire.api.server.localauthority.v1.LocalAuthority/TaintJWTAuthority":     authz.Admin,
	"/spire.api.server.localauthority.v1.LocalAuthority/RevokeJWTAuthority":    authz.Admin,

	"/grpc.health.v1.Health/Check": authz.Anyone,
	"/grpc.health.v1.Health/Watch": authz.Anyone,
}
