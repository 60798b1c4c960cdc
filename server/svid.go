package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/plinth-id/plinth/hsm"
	"github.com/plinth-id/plinth/server/ca"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// serverSVID is the server's own X509-SVID (spiffe://<td>/spire/server),
// presented to agents on the TCP port and renewed at half life.
type serverSVID struct {
	ca   *ca.CA
	keys hsm.KeyManager
	id   spiffeid.ID
	log  *slog.Logger
	cert atomic.Pointer[tls.Certificate]
}

func (s *serverSVID) rotate(ctx context.Context) error {
	key, err := s.keys.GenerateKey(ctx, "server-svid", hsm.ECP256)
	if err != nil {
		return fmt.Errorf("server: could not generate server SVID key: %w", err)
	}
	chain, err := s.ca.SignX509SVID(ctx, ca.X509Params{ID: s.id, PublicKey: key.Public()})
	if err != nil {
		return fmt.Errorf("server: could not sign server SVID: %w", err)
	}
	tc := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, c := range chain {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	s.cert.Store(tc)
	return nil
}

func (s *serverSVID) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.cert.Load(), nil
}

// run renews the SVID at half its life, and at once when the CA rotates so
// the chain always comes from the active authority.
func (s *serverSVID) run(ctx context.Context) error {
	for {
		leaf := s.cert.Load().Leaf
		wait := time.Until(leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		case <-s.ca.Changed():
		}
		if err := s.rotate(ctx); err != nil {
			s.log.Error("could not renew the server SVID; retrying in 10s", "error", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(10 * time.Second):
			}
		}
	}
}
