// Package workloadapi serves the SPIFFE Workload API on a unix socket, from
// go-spiffe's proto, so any SPIFFE client works unchanged.
//
// Every call must carry the `workload.spiffe.io: true` metadata header. The
// caller is identified by the kernel (SO_PEERCRED) when it connects, then
// attested by the configured workload attestors on each call; its
// selectors pick the entries whose SVIDs it receives. Streams push a new
// message whenever the caller's SVIDs or the bundle change.
package workloadapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/plinth-id/plinth/agent/cache"
	"github.com/plinth-id/plinth/attestors"
	"github.com/plinth-id/plinth/procfs"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// Config is what New needs.
type Config struct {
	SocketPath  string
	TrustDomain spiffeid.TrustDomain
	Attestors   []attestors.WorkloadAttestor
	Cache       *cache.Cache
	// FetchJWT returns a JWT-SVID for an entry and audience (cached or new).
	FetchJWT func(ctx context.Context, e *cache.Entry, audience []string) (*cache.JWTSVID, error)
	ProcDir  string // default /proc
	Log      *slog.Logger
}

// Server is the Workload API server.
type Server struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	c Config
}

// New validates c.
func New(c Config) (*Server, error) {
	if c.SocketPath == "" || c.Cache == nil || c.FetchJWT == nil || len(c.Attestors) == 0 {
		return nil, errors.New("workloadapi: socket path, cache, JWT fetcher and at least one workload attestor are required")
	}
	if c.ProcDir == "" {
		c.ProcDir = "/proc"
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return &Server{c: c}, nil
}

// Run listens on the socket and serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	l, err := Listen(s.c.SocketPath)
	if err != nil {
		return err
	}
	g := grpc.NewServer(grpc.Creds(peerCreds{procDir: s.c.ProcDir}))
	workload.RegisterSpiffeWorkloadAPIServer(g, s)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(g, hs)
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		hs.Shutdown()
		g.Stop() // streams are long-lived: graceful stop would wait for them
	}()
	err = g.Serve(l)
	<-done
	os.Remove(s.c.SocketPath)
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("workloadapi: %w", err)
}

// Listen creates the socket, replacing a stale one, readable and writable by
// every local user: who gets what is decided by attestation, not by file
// permissions.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("workloadapi: could not create socket directory: %w", err)
	}
	if conn, err := net.DialTimeout("unix", path, time.Second); err == nil {
		conn.Close()
		return nil, fmt.Errorf("workloadapi: another agent is already serving %s; stop it or set a different socket_path", path)
	}
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("workloadapi: could not listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o777); err != nil {
		l.Close()
		return nil, fmt.Errorf("workloadapi: could not open %s to local users: %w", path, err)
	}
	return l, nil
}

// checkHeader enforces the Workload API's security header, which stops a
// browser or proxy tricked into calling the socket (SPIRE's exact message).
func checkHeader(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("workload.spiffe.io"); len(v) != 1 || v[0] != "true" {
		return status.Error(codes.InvalidArgument, "security header missing from request")
	}
	return nil
}

// attest returns the caller's selectors from every workload attestor.
func (s *Server) attest(ctx context.Context) ([]attestors.Selector, error) {
	if err := checkHeader(ctx); err != nil {
		return nil, err
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Internal, "no peer information")
	}
	info, ok := p.AuthInfo.(authInfo)
	if !ok {
		return nil, status.Error(codes.Internal, "no peer credentials")
	}
	if info.err != nil {
		return nil, status.Errorf(codes.Unauthenticated, "could not identify caller: %v", info.err)
	}
	var sels []attestors.Selector
	for _, a := range s.c.Attestors {
		ss, err := a.Attest(ctx, info.caller)
		if err != nil {
			s.c.Log.Warn("workload attestation failed", "attestor", a.Name(), "pid", info.caller.PID, "error", err)
			return nil, status.Errorf(codes.PermissionDenied, "workload attestation failed: %v", err)
		}
		sels = append(sels, ss...)
	}
	return attestors.SortSelectors(sels), nil
}

var errNoIdentity = status.Error(codes.PermissionDenied, "no identity issued")

// FetchX509SVID streams the caller's X509-SVIDs, with the bundle, now and
// after every change.
func (s *Server) FetchX509SVID(_ *workload.X509SVIDRequest, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	ctx := stream.Context()
	sels, err := s.attest(ctx)
	if err != nil {
		return err
	}
	sub := s.c.Cache.Subscribe(sels)
	defer sub.Close()
	for {
		select {
		case <-ctx.Done():
			return nil
		case u := <-sub.Updates():
			if len(u.Identities) == 0 {
				return errNoIdentity
			}
			if u.Bundle == nil {
				continue
			}
			if err := stream.Send(x509SVIDResponse(u)); err != nil {
				return err
			}
		}
	}
}

func x509SVIDResponse(u *cache.Update) *workload.X509SVIDResponse {
	bundle := concatDER(u.Bundle)
	resp := &workload.X509SVIDResponse{Svids: make([]*workload.X509SVID, len(u.Identities))}
	for i, id := range u.Identities {
		resp.Svids[i] = &workload.X509SVID{
			SpiffeId:    id.SVID.ID.String(),
			X509Svid:    id.SVID.ChainDER,
			X509SvidKey: id.SVID.KeyDER,
			Bundle:      bundle,
			Hint:        id.SVID.Hint,
		}
	}
	return resp
}

func concatDER(b *spiffebundle.Bundle) []byte {
	var out []byte
	for _, c := range b.X509Authorities() {
		out = append(out, c.Raw...)
	}
	return out
}

// FetchX509Bundles streams the X.509 bundles, now and after every change.
func (s *Server) FetchX509Bundles(_ *workload.X509BundlesRequest, stream grpc.ServerStreamingServer[workload.X509BundlesResponse]) error {
	return s.streamBundles(stream.Context(), func(b *spiffebundle.Bundle) error {
		return stream.Send(&workload.X509BundlesResponse{Bundles: map[string][]byte{b.TrustDomain().IDString(): concatDER(b)}})
	})
}

// FetchJWTBundles streams the JWT bundles (JWKS), now and after every change.
func (s *Server) FetchJWTBundles(_ *workload.JWTBundlesRequest, stream grpc.ServerStreamingServer[workload.JWTBundlesResponse]) error {
	return s.streamBundles(stream.Context(), func(b *spiffebundle.Bundle) error {
		jwks, err := b.JWTBundle().Marshal()
		if err != nil {
			return status.Errorf(codes.Internal, "could not encode JWT bundle: %v", err)
		}
		return stream.Send(&workload.JWTBundlesResponse{Bundles: map[string][]byte{b.TrustDomain().IDString(): jwks}})
	})
}

// streamBundles sends the bundle to a caller that has at least one identity,
// now and whenever it changes.
func (s *Server) streamBundles(ctx context.Context, send func(*spiffebundle.Bundle) error) error {
	sels, err := s.attest(ctx)
	if err != nil {
		return err
	}
	sub := s.c.Cache.Subscribe(sels)
	defer sub.Close()
	var last *spiffebundle.Bundle
	for {
		select {
		case <-ctx.Done():
			return nil
		case u := <-sub.Updates():
			if len(u.Identities) == 0 {
				return errNoIdentity
			}
			if u.Bundle == nil || u.Bundle == last {
				continue
			}
			last = u.Bundle
			if err := send(u.Bundle); err != nil {
				return err
			}
		}
	}
}

// FetchJWTSVID returns a JWT-SVID for each of the caller's entries (or only
// for spiffe_id when given), for the requested audience.
func (s *Server) FetchJWTSVID(ctx context.Context, req *workload.JWTSVIDRequest) (*workload.JWTSVIDResponse, error) {
	if err := checkHeader(ctx); err != nil {
		return nil, err
	}
	if len(req.Audience) == 0 || slices.Contains(req.Audience, "") {
		return nil, status.Error(codes.InvalidArgument, "audience must be specified")
	}
	sels, err := s.attest(ctx)
	if err != nil {
		return nil, err
	}
	resp := &workload.JWTSVIDResponse{}
	for _, e := range s.c.Cache.MatchEntries(sels) {
		if req.SpiffeId != "" && e.SPIFFEID.String() != req.SpiffeId {
			continue
		}
		svid, err := s.c.FetchJWT(ctx, e, req.Audience)
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "could not fetch JWT-SVID for %s: %v", e.SPIFFEID, err)
		}
		resp.Svids = append(resp.Svids, &workload.JWTSVID{SpiffeId: svid.ID.String(), Svid: svid.Token, Hint: svid.Hint})
	}
	if len(resp.Svids) == 0 {
		return nil, errNoIdentity
	}
	return resp, nil
}

// ValidateJWTSVID validates a JWT-SVID against the bundle and audience. Any
// local process may validate: it needs no identity of its own.
func (s *Server) ValidateJWTSVID(ctx context.Context, req *workload.ValidateJWTSVIDRequest) (*workload.ValidateJWTSVIDResponse, error) {
	if err := checkHeader(ctx); err != nil {
		return nil, err
	}
	if req.Audience == "" {
		return nil, status.Error(codes.InvalidArgument, "audience must be specified")
	}
	if req.Svid == "" {
		return nil, status.Error(codes.InvalidArgument, "svid must be specified")
	}
	b := s.c.Cache.Bundle()
	if b == nil {
		return nil, status.Error(codes.Unavailable, "no trust bundle yet; the agent has not synced with the server")
	}
	svid, err := jwtsvid.ParseAndValidate(req.Svid, jwtbundle.NewSet(b.JWTBundle()), []string{req.Audience})
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	claims, err := structpb.NewStruct(svid.Claims)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "could not encode claims: %v", err)
	}
	return &workload.ValidateJWTSVIDResponse{SpiffeId: svid.ID.String(), Claims: claims}, nil
}

// peerCreds is a gRPC transport credential that records the kernel's peer
// credentials of each unix connection.
type peerCreds struct{ procDir string }

type authInfo struct {
	caller attestors.Caller
	err    error
}

func (authInfo) AuthType() string { return "peercred" }

func (p peerCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return conn, authInfo{err: errors.New("not a unix socket connection")}, nil
	}
	c, err := procfs.Caller(uc, p.procDir)
	return conn, authInfo{caller: c, err: err}, nil
}

func (peerCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("workloadapi: peer credentials are server-side only")
}

func (peerCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "peercred"}
}

func (p peerCreds) Clone() credentials.TransportCredentials { return p }

func (peerCreds) OverrideServerName(string) error { return nil }
