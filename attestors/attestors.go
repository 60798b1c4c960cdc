// Package attestors holds the contracts every attestor implements: the
// server half of node attestation (NodeAttestor), the agent half
// (AgentAttestor) and workload attestation on the agent (WorkloadAttestor).
//
// Concrete attestors live in subpackages (jointoken, unix, tpm, …) and are
// chosen by name only in cmd/*, in one visible table. This package is a
// leaf: it imports nothing of Plinth.
package attestors

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Selector is one attested property, written `type:value` (`unix:uid:1000`).
// Type never contains a colon; Value may.
type Selector struct {
	Type  string
	Value string
}

// String returns the selector as `type:value`.
func (s Selector) String() string { return s.Type + ":" + s.Value }

// ParseSelector parses `type:value`. Both parts must be non-empty.
func ParseSelector(s string) (Selector, error) {
	t, v, ok := strings.Cut(s, ":")
	if !ok || t == "" || v == "" {
		return Selector{}, fmt.Errorf("attestors: selector %q must be type:value with both parts non-empty", s)
	}
	return Selector{Type: t, Value: v}, nil
}

// SortSelectors sorts selectors by type then value, in place, and drops
// duplicates; it returns the shortened slice.
func SortSelectors(ss []Selector) []Selector {
	sort.Slice(ss, func(i, j int) bool {
		if ss[i].Type != ss[j].Type {
			return ss[i].Type < ss[j].Type
		}
		return ss[i].Value < ss[j].Value
	})
	out := ss[:0]
	for i, s := range ss {
		if i > 0 && s == ss[i-1] {
			continue
		}
		out = append(out, s)
	}
	return out
}

// Challenge sends c to the attesting agent and returns its response. A node
// attestor may call it any number of times.
type Challenge func(ctx context.Context, c []byte) ([]byte, error)

// NodeAttestor is the server half of node attestation.
type NodeAttestor interface {
	// Name is the attestation type on the wire (`join_token`, `tpm`).
	Name() string
	// Attest verifies payload (and any challenge rounds) and returns who the
	// node is. A rejection wraps ErrRejected and says which check failed.
	Attest(ctx context.Context, payload []byte, challenge Challenge) (*Result, error)
}

// Result is what a successful node attestation establishes.
type Result struct {
	AgentID   spiffeid.ID
	Selectors []Selector
	// CanReattest says the node can attest again to renew (TPM, cloud) rather
	// than only renewing with its current SVID (join token).
	CanReattest bool
	// Evidence is a human-readable summary kept for audit and `agent show`.
	// Keys ending in "_json" hold machine-readable detail (a measured boot
	// state): kept with the agent's record, left out of the audit log, which
	// records every attestation.
	Evidence map[string]string
	// BoundKey, when set, is the only public key the agent SVID may
	// certify: the attestor proved the key lives in the attested hardware
	// (TPM2_Certify), so the server refuses a CSR for any other key.
	BoundKey crypto.PublicKey
	// ReattestInterval, when set, is how often the node must prove its state
	// again: the server caps the agent SVID's lifetime at twice this, so the
	// agent, renewing at half life, attests again at least this often.
	ReattestInterval time.Duration
	// MustReattest says the evidence must be proved again at every renewal
	// (a measured boot): the server refuses a result that also says the
	// node cannot attest again, which would renew without proof.
	MustReattest bool
}

// Disqualification is a rejection of a node that proved who it is but whose
// state no longer qualifies it (a measured boot outside policy): the server
// ends the identity it holds at once instead of waiting for it to expire.
// Only an attestor that has verified possession of the node's hardware
// identity may return it; anyone can send a node's public identifiers.
type Disqualification struct {
	ID  spiffeid.ID
	Err error
}

func (d *Disqualification) Error() string        { return d.Err.Error() }
func (d *Disqualification) Unwrap() error        { return d.Err }
func (d *Disqualification) AgentID() spiffeid.ID { return d.ID }

// ErrRejected marks an attestation that was refused because the evidence did
// not satisfy a check (as opposed to an internal failure).
var ErrRejected = errors.New("attestation rejected")

// Rejectf returns an error wrapping ErrRejected with a reason.
func Rejectf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrRejected, fmt.Sprintf(format, args...))
}

// Subject is implemented by a rejection that knows which agent it is about
// (the attestor got as far as the node's identity), so the audit record
// and `agent show` can name it.
type Subject interface {
	AgentID() spiffeid.ID
}

// RejectionFor returns err (a rejection) marked as being about agent id.
func RejectionFor(id spiffeid.ID, err error) error {
	return &subjectError{id: id, err: err}
}

type subjectError struct {
	id  spiffeid.ID
	err error
}

func (e *subjectError) Error() string        { return e.err.Error() }
func (e *subjectError) Unwrap() error        { return e.err }
func (e *subjectError) AgentID() spiffeid.ID { return e.id }

// AgentAttestor is the agent half of node attestation.
type AgentAttestor interface {
	// Name is the attestation type on the wire; it matches the server half.
	Name() string
	// Payload returns the first message of the attestation. agentKey is the
	// key the agent SVID will certify; an attestor that binds the SVID to
	// hardware (tpm) proves where that key lives.
	Payload(ctx context.Context, agentKey crypto.Signer) ([]byte, error)
	// Respond answers one challenge from the server half.
	Respond(ctx context.Context, challenge []byte) ([]byte, error)
}

// Caller identifies a process calling the Workload API.
// Fields come from the kernel (SO_PEERCRED) when the connection is accepted.
type Caller struct {
	PID int32
	UID uint32
	GID uint32
	// StartTime is the process start time (field 22 of /proc/PID/stat, in
	// clock ticks since boot) read when the connection was accepted. A
	// workload attestor compares it after reading the process, so a PID that
	// exited and was reused during attestation is refused.
	StartTime uint64
}

// WorkloadAttestor finds the selectors of a calling process.
type WorkloadAttestor interface {
	Name() string
	Attest(ctx context.Context, c Caller) ([]Selector, error)
}
