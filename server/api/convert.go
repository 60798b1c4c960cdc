package api

import (
	"crypto/x509"
	"fmt"
	"strings"
	"time"

	"github.com/plinth-id/plinth/attestors"
	"github.com/plinth-id/plinth/server/ca"
	"github.com/plinth-id/plinth/server/datastore"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
)

// idFromProto validates a wire SPIFFE ID and returns its canonical form.
func idFromProto(p *types.SPIFFEID) (spiffeid.ID, error) {
	if p == nil {
		return spiffeid.ID{}, fmt.Errorf("SPIFFE ID is missing")
	}
	td, err := spiffeid.TrustDomainFromString(p.TrustDomain)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("invalid SPIFFE ID %q: %v", "spiffe://"+p.TrustDomain+p.Path, err)
	}
	id, err := spiffeid.FromPath(td, p.Path)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("invalid SPIFFE ID %q: %v", "spiffe://"+p.TrustDomain+p.Path, err)
	}
	return id, nil
}

func idToProto(s string) *types.SPIFFEID {
	id, err := spiffeid.FromString(s)
	if err != nil {
		return &types.SPIFFEID{}
	}
	return &types.SPIFFEID{TrustDomain: id.TrustDomain().Name(), Path: id.Path()}
}

func selectorsFromProto(ps []*types.Selector) ([]attestors.Selector, error) {
	out := make([]attestors.Selector, 0, len(ps))
	for _, p := range ps {
		if p.GetType() == "" {
			return nil, fmt.Errorf("invalid selector %q: type is empty", p.GetType()+":"+p.GetValue())
		}
		if strings.Contains(p.Type, ":") {
			return nil, fmt.Errorf("invalid selector %q: type contains ':'", p.Type+":"+p.Value)
		}
		if p.Value == "" {
			return nil, fmt.Errorf("invalid selector %q: value is empty", p.Type+":")
		}
		out = append(out, attestors.Selector{Type: p.Type, Value: p.Value})
	}
	return attestors.SortSelectors(out), nil
}

func selectorsToProto(ss []attestors.Selector) []*types.Selector {
	out := make([]*types.Selector, len(ss))
	for i, s := range ss {
		out[i] = &types.Selector{Type: s.Type, Value: s.Value}
	}
	return out
}

// entryFromProto validates an entry as SPIRE does and converts it. The
// SPIFFE ID and parent ID must be in the server's trust domain; at least one
// selector; TTLs not negative; DNS names well formed.
func (h *Handlers) entryFromProto(p *types.Entry) (*datastore.Entry, error) {
	if p == nil {
		return nil, fmt.Errorf("missing entry")
	}
	id, err := idFromProto(p.SpiffeId)
	if err != nil {
		return nil, fmt.Errorf("invalid spiffe_id: %v", err)
	}
	if id.TrustDomain() != h.TrustDomain {
		return nil, fmt.Errorf("invalid spiffe_id: %q is not a member of trust domain %q", id, h.TrustDomain)
	}
	if id.Path() == "" {
		return nil, fmt.Errorf("invalid spiffe_id: %q has no path; entries name workloads, not the trust domain", id)
	}
	parent, err := idFromProto(p.ParentId)
	if err != nil {
		return nil, fmt.Errorf("invalid parent_id: %v", err)
	}
	if parent.TrustDomain() != h.TrustDomain {
		return nil, fmt.Errorf("invalid parent_id: %q is not a member of trust domain %q", parent, h.TrustDomain)
	}
	if len(p.Selectors) == 0 {
		return nil, fmt.Errorf("invalid selectors: at least one selector is required")
	}
	sels, err := selectorsFromProto(p.Selectors)
	if err != nil {
		return nil, fmt.Errorf("invalid selectors: %v", err)
	}
	if p.X509SvidTtl < 0 {
		return nil, fmt.Errorf("invalid x509_svid_ttl: %d is negative", p.X509SvidTtl)
	}
	if p.JwtSvidTtl < 0 {
		return nil, fmt.Errorf("invalid jwt_svid_ttl: %d is negative", p.JwtSvidTtl)
	}
	for _, d := range p.DnsNames {
		if err := validateDNSName(d); err != nil {
			return nil, fmt.Errorf("invalid dns_names: %v", err)
		}
	}
	for _, td := range p.FederatesWith {
		if _, err := spiffeid.TrustDomainFromString(td); err != nil {
			return nil, fmt.Errorf("invalid federates_with %q: %v", td, err)
		}
	}
	if p.ExpiresAt < 0 {
		return nil, fmt.Errorf("invalid expires_at: %d is negative", p.ExpiresAt)
	}
	return &datastore.Entry{
		ID:            p.Id,
		SPIFFEID:      id.String(),
		ParentID:      parent.String(),
		Selectors:     sels,
		X509SVIDTTL:   p.X509SvidTtl,
		JWTSVIDTTL:    p.JwtSvidTtl,
		DNSNames:      p.DnsNames,
		FederatesWith: p.FederatesWith,
		Admin:         p.Admin,
		Downstream:    p.Downstream,
		ExpiresAt:     p.ExpiresAt,
		Hint:          p.Hint,
		StoreSVID:     p.StoreSvid,
	}, nil
}

func validateDNSName(d string) error {
	if d == "" || len(d) > 253 {
		return fmt.Errorf("%q is not a valid DNS name", d)
	}
	for i, label := range strings.Split(d, ".") {
		if label == "*" && i == 0 && strings.Count(d, ".") > 0 {
			continue
		}
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("%q is not a valid DNS name", d)
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return fmt.Errorf("%q is not a valid DNS name", d)
			}
		}
	}
	return nil
}

// entryToProto converts e, setting only the fields mask selects (nil = all).
func entryToProto(e *datastore.Entry, m *types.EntryMask) *types.Entry {
	out := &types.Entry{Id: e.ID}
	all := m == nil
	if all || m.SpiffeId {
		out.SpiffeId = idToProto(e.SPIFFEID)
	}
	if all || m.ParentId {
		out.ParentId = idToProto(e.ParentID)
	}
	if all || m.Selectors {
		out.Selectors = selectorsToProto(e.Selectors)
	}
	if all || m.X509SvidTtl {
		out.X509SvidTtl = e.X509SVIDTTL
	}
	if all || m.JwtSvidTtl {
		out.JwtSvidTtl = e.JWTSVIDTTL
	}
	if all || m.FederatesWith {
		out.FederatesWith = e.FederatesWith
	}
	if all || m.Admin {
		out.Admin = e.Admin
	}
	if all || m.Downstream {
		out.Downstream = e.Downstream
	}
	if all || m.ExpiresAt {
		out.ExpiresAt = e.ExpiresAt
	}
	if all || m.DnsNames {
		out.DnsNames = e.DNSNames
	}
	if all || m.RevisionNumber {
		out.RevisionNumber = e.RevisionNumber
	}
	if all || m.StoreSvid {
		out.StoreSvid = e.StoreSVID
	}
	if all || m.Hint {
		out.Hint = e.Hint
	}
	if all || m.CreatedAt {
		out.CreatedAt = e.CreatedAt
	}
	return out
}

func agentToProto(a *datastore.Agent, m *types.AgentMask) *types.Agent {
	out := &types.Agent{Id: idToProto(a.ID)}
	all := m == nil
	if all || m.AttestationType {
		out.AttestationType = a.AttestationType
	}
	if all || m.X509SvidSerialNumber {
		out.X509SvidSerialNumber = a.SerialNumber
	}
	if all || m.X509SvidExpiresAt {
		out.X509SvidExpiresAt = a.ExpiresAt
	}
	if all || m.Selectors {
		out.Selectors = selectorsToProto(a.Selectors)
	}
	if all || m.Banned {
		out.Banned = a.Banned
	}
	if all || m.CanReattest {
		out.CanReattest = a.CanReattest
	}
	return out
}

func bundleToProto(b *ca.Bundle, m *types.BundleMask) (*types.Bundle, error) {
	out := &types.Bundle{TrustDomain: b.TrustDomain.Name()}
	all := m == nil
	if all || m.X509Authorities {
		for _, a := range b.X509Authorities {
			out.X509Authorities = append(out.X509Authorities, &types.X509Certificate{Asn1: a.Cert.Raw, Tainted: a.Tainted})
		}
	}
	if all || m.JwtAuthorities {
		for _, a := range b.JWTAuthorities {
			der, err := x509.MarshalPKIXPublicKey(a.PublicKey)
			if err != nil {
				return nil, err
			}
			out.JwtAuthorities = append(out.JwtAuthorities, &types.JWTKey{PublicKey: der, KeyId: a.KeyID, ExpiresAt: a.ExpiresAt.Unix(), Tainted: a.Tainted})
		}
	}
	if all || m.RefreshHint {
		out.RefreshHint = int64((5 * time.Minute).Seconds())
	}
	if all || m.SequenceNumber {
		out.SequenceNumber = b.Sequence
	}
	return out, nil
}

func x509SVIDToProto(chain []*x509.Certificate, id spiffeid.ID, hint string) *types.X509SVID {
	out := &types.X509SVID{Id: idToProto(id.String()), ExpiresAt: chain[0].NotAfter.Unix(), Hint: hint}
	for _, c := range chain {
		out.CertChain = append(out.CertChain, c.Raw)
	}
	return out
}
