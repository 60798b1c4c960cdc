package awsiid

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/plinth-id/plinth/attestors"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// ServerConfig configures the server half.
type ServerConfig struct {
	TrustDomain spiffeid.TrustDomain
	// Certs are trusted in addition to AWS's shipped per-region certificates
	// (AWSCertificates): a region AWS opened after this release, or the test
	// certificate of a simulator. A configured certificate may sign documents
	// of any region; a shipped one only of its own.
	Certs []*x509.Certificate
	// Accounts and Regions are allowlists; empty allows any.
	Accounts []string
	Regions  []string
	// MaxInstanceAge refuses documents of instances that have been running
	// (since their pendingTime) longer than this; 0 means no limit.
	MaxInstanceAge time.Duration
	// AllowReattestation lets an instance attest again after its first
	// attestation. Off, a second attestation for the same instance is refused
	// (the document never expires, so anyone who copies it could otherwise
	// attest as the instance); the operator evicts the agent to let it in again.
	AllowReattestation bool
	// Attested reports whether an agent ID (spiffe://…) has already
	// attested. Required unless AllowReattestation is set.
	Attested func(ctx context.Context, agentID string) (bool, error)
	// EC2, when set, looks the instance up with DescribeInstances (in the
	// document's region and account) for tag, security group, subnet and VPC
	// selectors, refuses instances that are not pending or running, and runs
	// the block device check. NewAWSClients provides it. Nil: no lookup.
	EC2 func(ctx context.Context, region, accountID string) (EC2API, error)
	// IAM, when set with EC2, resolves the instance profile to its roles for
	// iamrole selectors. NewAWSClients provides it.
	IAM func(ctx context.Context, accountID string) (IAMAPI, error)
	// SkipBlockDevice turns off the block device check of the EC2 lookup
	// (SPIRE's skip_block_device).
	SkipBlockDevice bool
	// DisableInstanceProfileSelectors turns off iamrole selectors (SPIRE's
	// disable_instance_profile_selectors).
	DisableInstanceProfileSelectors bool
	// LookupTimeout bounds the AWS API calls of one attestation; default 5s.
	LookupTimeout time.Duration
	Clock         func() time.Time
}

// Server is the server half. It is safe for concurrent use.
type Server struct {
	c     ServerConfig
	trust trustStore
}

// NewServer validates c and loads the shipped certificates.
func NewServer(c ServerConfig) (*Server, error) {
	if c.TrustDomain.IsZero() {
		return nil, errors.New("awsiid: trust domain is required")
	}
	if !c.AllowReattestation && c.Attested == nil {
		return nil, errors.New("awsiid: the already-attested lookup is required unless re-attestation is allowed")
	}
	for _, a := range c.Accounts {
		if !accountRE.MatchString(a) {
			return nil, fmt.Errorf("awsiid: account ID %q is not 12 digits", a)
		}
	}
	for _, r := range c.Regions {
		if !regionRE.MatchString(r) {
			return nil, fmt.Errorf("awsiid: region %q is malformed", r)
		}
	}
	if c.MaxInstanceAge < 0 {
		return nil, fmt.Errorf("awsiid: max instance age %s is negative", c.MaxInstanceAge)
	}
	if c.IAM != nil && c.EC2 == nil {
		return nil, errors.New("awsiid: the IAM lookup needs the EC2 lookup")
	}
	if c.LookupTimeout == 0 {
		c.LookupTimeout = 5 * time.Second
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	ts, err := newTrustStore(c.Certs)
	if err != nil {
		return nil, err
	}
	return &Server{c: c, trust: ts}, nil
}

func (s *Server) Name() string { return Name }

// Attest verifies the payload. It sends no challenge: the document is bound
// to the instance by AWS's signature, and replay is refused through the
// already-attested lookup. Every refusal wraps attestors.ErrRejected and
// names the check that failed; a failing lookup is returned as is.
func (s *Server) Attest(ctx context.Context, payload []byte, _ attestors.Challenge) (*attestors.Result, error) {
	p, err := DecodePayload(payload)
	if err != nil {
		return nil, attestors.Rejectf("%v", err)
	}
	d, signer, err := s.verify(p)
	if err != nil {
		return nil, attestors.Rejectf("%v", err)
	}
	id, err := agentID(s.c.TrustDomain, d)
	if err != nil {
		return nil, attestors.Rejectf("%v", err)
	}
	if !s.c.AllowReattestation {
		seen, err := s.c.Attested(ctx, id.String())
		if err != nil {
			return nil, fmt.Errorf("awsiid: could not check whether %s has attested: %w", id, err)
		}
		if seen {
			return nil, attestors.Rejectf("instance %s has already attested; set allow_reattestation or evict the agent", d.InstanceID)
		}
	}

	sels := documentSelectors(d)
	evidence := map[string]string{
		"account_id":        d.AccountID,
		"region":            d.Region,
		"instance_id":       d.InstanceID,
		"image_id":          d.ImageID,
		"instance_type":     d.InstanceType,
		"availability_zone": d.AvailabilityZone,
		"signer":            signer.String(),
		"ec2_lookup":        "off",
	}
	if !d.PendingTime.IsZero() {
		evidence["pending_time"] = d.PendingTime.UTC().Format(time.RFC3339)
	}
	if s.c.EC2 != nil {
		more, err := s.lookup(ctx, d)
		if err != nil {
			return nil, err
		}
		sels = append(sels, more...)
		evidence["ec2_lookup"] = "on"
	}
	return &attestors.Result{
		AgentID:     id,
		Selectors:   attestors.SortSelectors(sels),
		CanReattest: s.c.AllowReattestation,
		Evidence:    evidence,
	}, nil
}

// verify runs every check that needs no I/O: signature, document, region
// binding, allowlists and age. Its errors are rejection reasons.
func (s *Server) verify(p *Payload) (*document, *trusted, error) {
	signer, err := s.trust.verify([]byte(p.Document), p.RSA2048)
	if err != nil {
		return nil, nil, err
	}
	d, err := parseDocument([]byte(p.Document))
	if err != nil {
		return nil, nil, err
	}
	if signer.region != "" && signer.region != d.Region {
		return nil, nil, fmt.Errorf("document names region %s but is signed with the AWS %s certificate", d.Region, signer.region)
	}
	if len(s.c.Accounts) > 0 && !slices.Contains(s.c.Accounts, d.AccountID) {
		return nil, nil, fmt.Errorf("account %s is not allowed (allowed: %s)", d.AccountID, strings.Join(s.c.Accounts, ", "))
	}
	if len(s.c.Regions) > 0 && !slices.Contains(s.c.Regions, d.Region) {
		return nil, nil, fmt.Errorf("region %s is not allowed (allowed: %s)", d.Region, strings.Join(s.c.Regions, ", "))
	}
	if max := s.c.MaxInstanceAge; max > 0 {
		if d.PendingTime.IsZero() {
			return nil, nil, fmt.Errorf("instance %s: the document has no pendingTime, so its age cannot be checked", d.InstanceID)
		}
		age := s.c.Clock().Sub(d.PendingTime)
		if age > max {
			return nil, nil, fmt.Errorf("instance %s is too old: pending since %s (%s ago), max_instance_age is %s",
				d.InstanceID, d.PendingTime.UTC().Format(time.RFC3339), age.Truncate(time.Second), max)
		}
	}
	return d, signer, nil
}

// agentID is spiffe://<td>/spire/agent/aws_iid/<account>/<region>/<instance>,
// as in SPIRE.
func agentID(td spiffeid.TrustDomain, d *document) (spiffeid.ID, error) {
	id, err := spiffeid.FromSegments(td, "spire", "agent", Name, d.AccountID, d.Region, d.InstanceID)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("cannot form the agent ID: %v", err)
	}
	return id, nil
}

// documentSelectors are the selectors the signed document supports. az,
// image:id, instance:id and region are SPIRE's; account and instance:type are
// Plinth's.
func documentSelectors(d *document) []attestors.Selector {
	var out []attestors.Selector
	add := func(prefix, v string) {
		if v != "" {
			out = append(out, attestors.Selector{Type: Name, Value: prefix + v})
		}
	}
	add("account:", d.AccountID)
	add("region:", d.Region)
	add("az:", d.AvailabilityZone)
	add("image:id:", d.ImageID)
	add("instance:id:", d.InstanceID)
	add("instance:type:", d.InstanceType)
	return out
}
