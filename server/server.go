// Package server is plinth-server: the CA of one trust domain, node
// attestation, registration entries and the trust bundle, served as SPIRE's
// public API on a TCP port (for agents and remote admins, over TLS) and on a
// local unix socket (for the admin CLI).
//
//	s, err := server.New(server.Config{...})
//	err = s.Run(ctx) // until ctx ends or a part fails
package server

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	"github.com/plinth-id/plinth/attestors"
	"github.com/plinth-id/plinth/health"
	"github.com/plinth-id/plinth/hsm"
	"github.com/plinth-id/plinth/server/api"
	"github.com/plinth-id/plinth/server/authz"
	"github.com/plinth-id/plinth/server/ca"
	"github.com/plinth-id/plinth/server/datastore"
	"github.com/plinth-id/plinth/server/entries"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
)

// Config is the server's typed configuration; cmd/plinth-server builds it
// from the HCL file.
type Config struct {
	TrustDomain spiffeid.TrustDomain
	// ListenAddr is the agent-facing TCP address (host:port).
	ListenAddr string
	// SocketPath is the admin unix socket.
	SocketPath string
	// HealthAddr, when set, serves HTTP liveness and readiness probes.
	HealthAddr, LivePath, ReadyPath string

	Store         *datastore.Store
	Keys          hsm.KeyManager
	NodeAttestors []attestors.NodeAttestor

	CATTL, X509SVIDTTL, JWTSVIDTTL, AgentTTL time.Duration
	CAKeyType, JWTKeyType                    hsm.KeyType
	CASubject                                pkix.Name
	JWTIssuer                                string
	AdminIDs                                 []spiffeid.ID
	// Upstream, when set, signs the server's CA (the bundle is its roots).
	Upstream *ca.Upstream

	Log *slog.Logger
}

// Server runs plinth-server.
type Server struct {
	c     Config
	ready atomic.Bool
}

// New validates c.
func New(c Config) (*Server, error) {
	switch {
	case c.TrustDomain.IsZero():
		return nil, errors.New("server: trust domain is required")
	case c.Store == nil:
		return nil, errors.New("server: datastore is required")
	case c.Keys == nil:
		return nil, errors.New("server: key manager is required")
	case len(c.NodeAttestors) == 0:
		return nil, errors.New("server: at least one node attestor is required")
	case c.ListenAddr == "" || c.SocketPath == "":
		return nil, errors.New("server: listen address and socket path are required")
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return &Server{c: c}, nil
}

// journal keeps the CA journal in the datastore.
type journal struct{ s *datastore.Store }

func (j journal) Load(ctx context.Context) ([]byte, error) {
	b, err := j.s.Get(ctx, "ca_journal")
	if errors.Is(err, datastore.ErrNotFound) {
		return nil, nil
	}
	return b, err
}

func (j journal) Save(ctx context.Context, data []byte) error {
	return j.s.Put(ctx, "ca_journal", data)
}

// Run serves until ctx ends or a part fails; it stops every part before it
// returns.
func (s *Server) Run(ctx context.Context) error {
	c := s.c
	log := c.Log
	authority, err := ca.New(ctx, ca.Config{
		TrustDomain: c.TrustDomain, Keys: c.Keys, Journal: journal{c.Store},
		CATTL: c.CATTL, X509SVIDTTL: c.X509SVIDTTL, JWTSVIDTTL: c.JWTSVIDTTL,
		KeyType: c.CAKeyType, JWTKeyType: c.JWTKeyType, Subject: c.CASubject, JWTIssuer: c.JWTIssuer, Upstream: c.Upstream,
		Log: log.With("part", "ca"),
	})
	if err != nil {
		return err
	}
	seq, err := c.Store.LastEntryEvent(ctx)
	if err != nil {
		return fmt.Errorf("server: could not read entry events: %w", err)
	}
	all, err := c.Store.ListEntries(ctx)
	if err != nil {
		return fmt.Errorf("server: could not load entries: %w", err)
	}
	serverID, _ := spiffeid.FromPath(c.TrustDomain, "/spire/server")
	index := entries.New(serverID.String(), all)

	svid := &serverSVID{ca: authority, keys: c.Keys, id: serverID, log: log}
	if err := svid.rotate(ctx); err != nil {
		return err
	}

	nas := make(map[string]attestors.NodeAttestor)
	for _, na := range c.NodeAttestors {
		nas[na.Name()] = na
	}
	h := &api.Handlers{
		TrustDomain: c.TrustDomain, Store: c.Store, CA: authority, Entries: index,
		NodeAttestors: nas, AgentTTL: cmp.Or(c.AgentTTL, c.X509SVIDTTL, time.Hour), Log: log.With("part", "api"),
	}
	az := &authz.Authorizer{
		TrustDomain: c.TrustDomain,
		Agents:      c.Store,
		Methods:     api.Methods,
		IsAdmin: func(id spiffeid.ID) bool {
			if slices.Contains(c.AdminIDs, id) {
				return true
			}
			admins, _ := index.Page("", 1, func(e *datastore.Entry) bool { return e.Admin && e.SPIFFEID == id.String() })
			return len(admins) > 0
		},
	}
	healthSrv := grpchealth.NewServer()
	newGRPC := func(opts ...grpc.ServerOption) *grpc.Server {
		opts = append(opts,
			grpc.ChainUnaryInterceptor(az.Unary),
			grpc.ChainStreamInterceptor(az.Stream),
			grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		)
		g := grpc.NewServer(opts...)
		h.Register(g)
		healthpb.RegisterHealthServer(g, healthSrv)
		return g
	}

	tlsConf := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: svid.getCertificate,
		ClientAuth:     tls.RequestClientCert,
		// A client certificate is optional (AttestAgent needs none), but one
		// that is presented must chain to the trust bundle.
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return nil
			}
			_, _, err := x509svid.ParseAndVerify(raw, bundleSource(authority))
			return err
		},
	}
	tcpSrv := newGRPC(grpc.Creds(credentials.NewTLS(tlsConf)))
	udsSrv := newGRPC()

	tcpLis, err := net.Listen("tcp", c.ListenAddr)
	if err != nil {
		return fmt.Errorf("server: could not listen on %s: %w", c.ListenAddr, err)
	}
	udsLis, err := listenUnix(c.SocketPath)
	if err != nil {
		tcpLis.Close()
		return err
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return tcpSrv.Serve(tcpLis) })
	g.Go(func() error { return udsSrv.Serve(udsLis) })
	g.Go(func() error { return authority.Run(gctx) })
	g.Go(func() error { return svid.run(gctx) })
	g.Go(func() error { return index.Follow(gctx, c.Store, seq, 5*time.Second, log) })
	g.Go(func() error { return s.pruneTokens(gctx) })
	g.Go(func() error { s.reportSigning(gctx, authority, healthSrv); return nil })
	if sw, ok := c.Keys.(hsm.Sweeper); ok {
		g.Go(func() error { s.sweep(gctx, sw); return nil })
	}
	if c.HealthAddr != "" {
		g.Go(func() error {
			return health.Serve(gctx, health.Config{Addr: c.HealthAddr, LivePath: c.LivePath, ReadyPath: c.ReadyPath, Ready: s.ready.Load})
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		healthSrv.Shutdown()
		s.ready.Store(false)
		stopGRPC(tcpSrv)
		stopGRPC(udsSrv)
		return nil
	})
	healthSrv.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.ready.Store(true)
	log.Info("plinth-server is ready", "trust_domain", c.TrustDomain.Name(), "address", tcpLis.Addr().String(), "socket", c.SocketPath, "entries", len(all))
	err = g.Wait()
	os.Remove(c.SocketPath)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// stopGRPC stops gracefully, then forcibly: watch streams never end by
// themselves.
func stopGRPC(g *grpc.Server) {
	done := make(chan struct{})
	go func() { g.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		g.Stop()
	}
}

func bundleSource(authority *ca.CA) x509bundle.Source {
	b := authority.Bundle()
	certs := make([]*x509.Certificate, len(b.X509Authorities))
	for i, a := range b.X509Authorities {
		certs[i] = a.Cert
	}
	return x509bundle.FromX509Authorities(b.TrustDomain, certs)
}

// listenUnix listens on path, replacing a stale socket left by a crash but
// never a socket another server still answers on.
func listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("server: could not create socket directory: %w", err)
	}
	if conn, err := net.Dial("unix", path); err == nil {
		conn.Close()
		return nil, fmt.Errorf("server: another server is already listening on %s; stop it or set a different socket_path", path)
	}
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("server: could not listen on %s: %w", path, err)
	}
	// The admin socket grants full control: owner only.
	if err := os.Chmod(path, 0o700); err != nil {
		l.Close()
		return nil, fmt.Errorf("server: could not restrict %s: %w", path, err)
	}
	return l, nil
}

// reportSigning makes the health checks follow the CA's ability to sign: a
// server whose HSM went away stays up and serves what it can (bundles,
// entries, cached state on agents), but reports NOT_SERVING until the keys
// sign again.
func (s *Server) reportSigning(ctx context.Context, authority *ca.CA, h *grpchealth.Server) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if authority.Healthy() == nil {
			h.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
			s.ready.Store(true)
		} else {
			h.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
			s.ready.Store(false)
		}
	}
}

// sweep removes keys the key manager created that back no key ID (left by
// a crash between creating a key and recording it), every hour.
func (s *Server) sweep(ctx context.Context, sw hsm.Sweeper) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if n, err := sw.Sweep(ctx); err != nil {
			s.c.Log.Warn("could not sweep orphaned keys; will retry", "error", err)
		} else if n > 0 {
			s.c.Log.Info("scheduled orphaned keys for deletion", "count", n)
		}
	}
}

func (s *Server) pruneTokens(ctx context.Context) error {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if n, err := s.c.Store.PruneJoinTokens(ctx, time.Now()); err != nil {
				s.c.Log.Warn("could not prune expired join tokens", "error", err)
			} else if n > 0 {
				s.c.Log.Info("pruned expired join tokens", "count", n)
			}
		}
	}
}
