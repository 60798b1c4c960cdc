// Package agent is plinth-agent: it attests its node to the server, keeps
// its agent SVID fresh, syncs the entries it is authorized for, pre-mints
// their X509-SVIDs and serves them to workloads over the SPIFFE Workload API.
//
//	a, err := agent.New(agent.Config{...})
//	err = a.Run(ctx) // until ctx ends, the agent is banned, or it cannot attest
package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/plinth-id/plinth/agent/attest"
	"github.com/plinth-id/plinth/agent/cache"
	"github.com/plinth-id/plinth/agent/workloadapi"
	"github.com/plinth-id/plinth/attestors"
	"github.com/plinth-id/plinth/health"
	"github.com/plinth-id/plinth/hsm"
	"github.com/plinth-id/plinth/notify"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
)

// Config is the agent's typed configuration; cmd/plinth-agent builds it from
// the HCL file.
type Config struct {
	TrustDomain spiffeid.TrustDomain
	ServerAddr  string // host:port
	SocketPath  string
	DataDir     string
	// BootstrapBundle is trusted for the first connection to the server,
	// before the agent has the server's own bundle.
	BootstrapBundle   []*x509.Certificate
	InsecureBootstrap bool

	NodeAttestor      attestors.AgentAttestor
	Keys              hsm.KeyManager // holds the agent SVID key
	WorkloadAttestors []attestors.WorkloadAttestor
	SyncInterval      time.Duration // default 5s
	// HealthAddr, when set, serves HTTP liveness and readiness probes.
	HealthAddr, LivePath, ReadyPath string
	Log                             *slog.Logger
}

// Agent runs plinth-agent.
type Agent struct {
	c        Config
	serverID spiffeid.ID
	cache    *cache.Cache
	// bundle is what the server's certificate is verified against: the
	// bootstrap bundle until the first sync, then the server's.
	bundle atomic.Pointer[[]*x509.Certificate]
	// ready is true while the agent holds a valid agent SVID.
	ready atomic.Bool
}

// New validates c.
func New(c Config) (*Agent, error) {
	switch {
	case c.TrustDomain.IsZero():
		return nil, errors.New("agent: trust domain is required")
	case c.ServerAddr == "" || c.SocketPath == "" || c.DataDir == "":
		return nil, errors.New("agent: server address, socket path and data dir are required")
	case c.NodeAttestor == nil || c.Keys == nil:
		return nil, errors.New("agent: a node attestor and a key manager are required")
	case len(c.BootstrapBundle) == 0 && !c.InsecureBootstrap:
		return nil, errors.New("agent: a bootstrap trust bundle is required (trust_bundle_path), or insecure_bootstrap = true")
	}
	if c.SyncInterval <= 0 {
		c.SyncInterval = 5 * time.Second
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	serverID, err := spiffeid.FromPath(c.TrustDomain, "/spire/server")
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	a := &Agent{c: c, serverID: serverID, cache: cache.New()}
	a.bundle.Store(&c.BootstrapBundle)
	return a, nil
}

// Run attests (or resumes with the SVID saved by a previous run), then
// serves the Workload API while keeping everything fresh. Workloads keep
// their cached SVIDs while the server is unreachable.
func (a *Agent) Run(ctx context.Context) error {
	log := a.c.Log
	st, err := loadState(ctx, a.c.DataDir, a.c.Keys)
	if err != nil {
		return err
	}
	if st != nil && len(st.bundle) > 0 {
		a.bundle.Store(&st.bundle)
	}
	client := &client{}
	manager := &cache.Manager{Cache: a.cache, Client: client, TrustDomain: a.c.TrustDomain, Interval: a.c.SyncInterval, Log: log.With("part", "sync")}
	wl, err := workloadapi.New(workloadapi.Config{
		SocketPath: a.c.SocketPath, TrustDomain: a.c.TrustDomain, Attestors: a.c.WorkloadAttestors,
		Cache: a.cache, FetchJWT: manager.FetchJWTSVID, Log: log.With("part", "workloadapi"),
	})
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return wl.Run(gctx) })
	g.Go(func() error { return a.persistBundle(gctx) })
	if a.c.HealthAddr != "" {
		g.Go(func() error {
			return health.Serve(gctx, health.Config{Addr: a.c.HealthAddr, LivePath: a.c.LivePath, ReadyPath: a.c.ReadyPath, Ready: a.ready.Load})
		})
	}
	g.Go(func() error {
		for {
			if st == nil {
				if st, err = a.attestRetrying(gctx); err != nil {
					return err
				}
			} else {
				log.Info("resuming with the saved agent SVID", "agent_id", st.id().String(), "expires_at", st.leaf().NotAfter)
			}
			a.ready.Store(true)
			err := a.session(gctx, st, client, manager)
			a.ready.Store(false)
			if gctx.Err() != nil {
				return nil
			}
			var reason types.PermissionDeniedDetails_Reason
			if !deniedReason(err, &reason) {
				return err
			}
			if reason == types.PermissionDeniedDetails_AGENT_BANNED {
				removeState(a.c.DataDir)
				return fmt.Errorf("agent: the server banned this agent (%s); its SVID was deleted. An operator must delete the agent on the server (plinth-server agent evict) before it can attest again", st.id())
			}
			log.Warn("the server no longer accepts this agent's SVID; attesting again", "agent_id", st.id().String(), "reason", reason.String(), "error", err)
			removeState(a.c.DataDir)
			st = nil
		}
	})
	return g.Wait()
}

// deniedReason reports whether err is a PermissionDenied about the agent
// itself, and which.
func deniedReason(err error, reason *types.PermissionDeniedDetails_Reason) bool {
	var se interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &se) || se.GRPCStatus().Code() != codes.PermissionDenied {
		return false
	}
	for _, d := range se.GRPCStatus().Details() {
		if pd, ok := d.(*types.PermissionDeniedDetails); ok {
			*reason = pd.Reason
			return true
		}
	}
	return false
}

// attestRetrying attests, retrying with backoff while the server cannot be
// reached (an agent often starts before its server); a refusal is final.
func (a *Agent) attestRetrying(ctx context.Context) (*state, error) {
	backoff := time.Second
	for {
		st, err := a.attest(ctx, "agent-svid-A")
		if c := status.Code(err); err == nil || (c != codes.Unavailable && c != codes.DeadlineExceeded) {
			return st, err
		}
		a.c.Log.Warn("cannot reach the server to attest; retrying", "server", a.c.ServerAddr, "error", err, "retry_in", backoff.String())
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

// attest proves the node to the server and saves the agent SVID.
func (a *Agent) attest(ctx context.Context, keyID string) (*state, error) {
	log := a.c.Log
	key, err := a.c.Keys.GenerateKey(ctx, keyID, hsm.ECP256)
	if err != nil {
		return nil, fmt.Errorf("agent: could not create agent key: %w", err)
	}
	conn, err := a.dial(nil, a.c.InsecureBootstrap)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	start := time.Now()
	svid, err := attest.Attest(ctx, conn, a.c.NodeAttestor, key)
	if err != nil {
		return nil, fmt.Errorf("agent: node attestation with %s failed: %w", a.c.NodeAttestor.Name(), err)
	}
	st := &state{KeyID: keyID, key: key, chain: svid.Chain, Reattestable: svid.Reattestable}
	if err := saveState(a.c.DataDir, st); err != nil {
		return nil, err
	}
	log.Info("node attested", "agent_id", st.id().String(), "attestor", a.c.NodeAttestor.Name(), "expires_at", st.leaf().NotAfter, "took", time.Since(start).String())
	return st, nil
}

// session talks to the server with the agent SVID in st: it syncs, watches
// for change notifications and renews the SVID, until ctx ends or the
// server denies the agent.
func (a *Agent) session(ctx context.Context, st *state, c *client, m *cache.Manager) error {
	conn, err := a.dial(st, false)
	if err != nil {
		return err
	}
	c.conn.Store(conn)
	defer func() { c.conn.Load().Close() }()

	trigger := make(chan struct{}, 1)
	m.Trigger = trigger
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return m.Run(gctx) })
	g.Go(func() error { a.watch(gctx, c, trigger); return nil })
	g.Go(func() error { return a.renew(gctx, st, c) })
	return g.Wait()
}

// watch turns the server's change notifications into sync triggers. A server
// without the notify service (a SPIRE server) leaves the agent polling.
func (a *Agent) watch(ctx context.Context, c *client, trigger chan<- struct{}) {
	backoff := time.Second
	for ctx.Err() == nil {
		stream, err := notify.Watch(ctx, c.conn.Load())
		for err == nil {
			if _, err = stream.Recv(); err == nil {
				backoff = time.Second
				select {
				case trigger <- struct{}{}:
				default:
				}
			}
		}
		if status.Code(err) == codes.Unimplemented {
			a.c.Log.Info("server sends no change notifications; polling only", "interval", a.c.SyncInterval.String())
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

// renew renews the agent SVID at half life. The new key goes into the other
// slot so a failed renewal never loses the working key.
func (a *Agent) renew(ctx context.Context, st *state, c *client) error {
	// Bundle updates wake the loop: an operator who taints the authority
	// that signed the agent SVID wants it replaced now, not at half life.
	sub := a.cache.Subscribe(nil)
	defer sub.Close()
	for {
		leaf := st.leaf()
		// At half life, but never in a tight loop (a very short TTL).
		wait := max(time.Until(leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore)/2)), time.Second)
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-timer.C:
		case <-sub.Updates():
			timer.Stop()
			if !cache.SignedBy(leaf, a.cache.Tainted()) {
				continue
			}
			a.c.Log.Info("the authority that signed the agent SVID is tainted; renewing now", "agent_id", st.id().String())
		}
		next, err := a.renewOnce(ctx, st, c)
		if err != nil {
			var reason types.PermissionDeniedDetails_Reason
			if deniedReason(err, &reason) {
				return err
			}
			a.c.Log.Warn("agent SVID renewal failed; retrying in 10s", "error", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(10 * time.Second):
			}
			continue
		}
		*st = *next
	}
}

func (a *Agent) renewOnce(ctx context.Context, st *state, c *client) (*state, error) {
	keyID := "agent-svid-B"
	if st.KeyID == keyID {
		keyID = "agent-svid-A"
	}
	var next *state
	if st.Reattestable {
		// Attest again with a fresh key in the other slot: a TPM node proves
		// itself anew (fresh quote) at every renewal.
		fresh, err := a.attest(ctx, keyID)
		if err != nil {
			return nil, err
		}
		next = fresh
	} else {
		key, err := a.c.Keys.GenerateKey(ctx, keyID, hsm.ECP256)
		if err != nil {
			return nil, fmt.Errorf("agent: could not create agent key: %w", err)
		}
		chain, err := attest.Renew(ctx, c.conn.Load(), key)
		if err != nil {
			return nil, err
		}
		next = &state{KeyID: keyID, key: key, chain: chain}
		if err := saveState(a.c.DataDir, next); err != nil {
			return nil, err
		}
	}
	conn, err := a.dial(next, false)
	if err != nil {
		return nil, err
	}
	old := c.conn.Swap(conn)
	// Let calls in flight on the old connection finish.
	time.AfterFunc(10*time.Second, func() { old.Close() })
	a.c.Log.Info("agent SVID renewed", "agent_id", next.id().String(), "expires_at", next.leaf().NotAfter)
	return next, nil
}

// dial connects to the server, presenting the agent SVID in st (none while
// attesting) and requiring the server's SVID spiffe://<td>/spire/server.
func (a *Agent) dial(st *state, insecure bool) (*grpc.ClientConn, error) {
	conf := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The server certificate is verified below against the trust
		// bundle and the server's SPIFFE ID, not against web PKI names.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			var id spiffeid.ID
			var err error
			if insecure {
				id, err = leafID(raw)
			} else {
				id, _, err = x509svid.ParseAndVerify(raw, x509bundle.FromX509Authorities(a.c.TrustDomain, *a.bundle.Load()))
			}
			if err != nil {
				return fmt.Errorf("server certificate: %w", err)
			}
			if id != a.serverID {
				return fmt.Errorf("server presented SPIFFE ID %q, want %q", id, a.serverID)
			}
			return nil
		},
	}
	if st != nil {
		cert := &tls.Certificate{PrivateKey: st.key, Leaf: st.leaf()}
		for _, c := range st.chain {
			cert.Certificate = append(cert.Certificate, c.Raw)
		}
		conf.Certificates = []tls.Certificate{*cert}
	}
	conn, err := grpc.NewClient("passthrough:///"+a.c.ServerAddr,
		grpc.WithTransportCredentials(credentials.NewTLS(conf)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, PermitWithoutStream: true}),
	)
	if err != nil {
		return nil, fmt.Errorf("agent: could not set up connection to %s: %w", a.c.ServerAddr, err)
	}
	return conn, nil
}

func leafID(raw [][]byte) (spiffeid.ID, error) {
	if len(raw) == 0 {
		return spiffeid.ID{}, errors.New("no certificate")
	}
	c, err := x509.ParseCertificate(raw[0])
	if err != nil {
		return spiffeid.ID{}, err
	}
	return x509svid.IDFromCert(c)
}

// persistBundle saves every new bundle so a restarted agent verifies the
// server against the current authorities, not the bootstrap bundle.
func (a *Agent) persistBundle(ctx context.Context) error {
	sub := a.cache.Subscribe(nil)
	defer sub.Close()
	for {
		select {
		case <-ctx.Done():
			return nil
		case u := <-sub.Updates():
			if u.Bundle == nil {
				continue
			}
			certs := u.Bundle.X509Authorities()
			a.bundle.Store(&certs)
			if err := saveBundle(a.c.DataDir, certs); err != nil {
				a.c.Log.Warn("could not save trust bundle", "error", err)
			}
		}
	}
}
