// Package composite carries several kinds of evidence in one attestation:
// a node presents, say, its cloud provider's instance document and its TPM
// quote together. The agent ID comes from the first (primary) part; the
// selectors are the union of every part's; a key bound by any part (the
// TPM's certified agent key) binds the SVID; the node can re-attest only if
// every part can.
//
// On the wire (type "composite", version 1) the payload lists the parts,
// and each challenge and response names the part it belongs to, so every
// part runs its own challenge rounds unchanged.
package composite

import (
	"bytes"
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/plinth-id/plinth/attestors"
)

// Name is the attestation type on the wire.
const Name = "composite"

const version = 1

type part struct {
	Type    string `json:"type"`
	Payload []byte `json:"payload"`
}

type payload struct {
	V     int    `json:"v"`
	Parts []part `json:"parts"`
}

type message struct {
	V    int    `json:"v"`
	Part int    `json:"part"`
	Data []byte `json:"data"`
}

func decode(what string, b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("malformed %s: %v", what, err)
	}
	if dec.More() {
		return fmt.Errorf("malformed %s: trailing data", what)
	}
	return nil
}

// Server is the server half over the node attestors the server runs.
type Server struct {
	parts map[string]attestors.NodeAttestor
}

// NewServer returns the server half; each part of an attestation must be of
// one of the given attestors' types.
func NewServer(parts []attestors.NodeAttestor) *Server {
	m := map[string]attestors.NodeAttestor{}
	for _, p := range parts {
		m[p.Name()] = p
	}
	return &Server{parts: m}
}

func (s *Server) Name() string { return Name }

// Attest runs every part in order and combines their results.
func (s *Server) Attest(ctx context.Context, b []byte, ask attestors.Challenge) (*attestors.Result, error) {
	var p payload
	if err := decode("composite payload", b, &p); err != nil {
		return nil, attestors.Rejectf("%v", err)
	}
	if p.V != version {
		return nil, attestors.Rejectf("composite payload version %d is not supported (want %d)", p.V, version)
	}
	if len(p.Parts) < 2 {
		return nil, attestors.Rejectf("a composite attestation needs at least two parts, got %d", len(p.Parts))
	}
	seen := map[string]bool{}
	for _, pt := range p.Parts {
		if _, ok := s.parts[pt.Type]; !ok {
			return nil, attestors.Rejectf("composite part %q is not enabled on this server (enabled: %s)", pt.Type, strings.Join(slices.Sorted(maps.Keys(s.parts)), ", "))
		}
		if seen[pt.Type] {
			return nil, attestors.Rejectf("composite part %q appears twice", pt.Type)
		}
		seen[pt.Type] = true
	}
	var out *attestors.Result
	for i, pt := range p.Parts {
		i := i
		res, err := s.parts[pt.Type].Attest(ctx, pt.Payload, func(ctx context.Context, c []byte) ([]byte, error) {
			m, _ := json.Marshal(message{V: version, Part: i, Data: c})
			rb, err := ask(ctx, m)
			if err != nil {
				return nil, err
			}
			var r message
			if err := decode("composite challenge response", rb, &r); err != nil {
				return nil, attestors.Rejectf("%v", err)
			}
			if r.Part != i {
				return nil, attestors.Rejectf("composite challenge response is for part %d, want %d", r.Part, i)
			}
			return r.Data, nil
		})
		if err != nil {
			var d *attestors.Disqualification
			if i > 0 && errors.As(err, &d) {
				// Only the primary part proved the identity a disqualification
				// would end; a secondary part's evidence proves nothing about
				// that identity (its hardware could be anyone's), so its
				// failure refuses this attestation and evicts nobody.
				err = d.Err
			}
			return nil, fmt.Errorf("composite part %s: %w", pt.Type, err)
		}
		if out == nil {
			out = &attestors.Result{AgentID: res.AgentID, CanReattest: true, Evidence: map[string]string{"primary": pt.Type}}
		}
		out.Selectors = append(out.Selectors, res.Selectors...)
		out.CanReattest = out.CanReattest && res.CanReattest
		out.MustReattest = out.MustReattest || res.MustReattest
		if iv := res.ReattestInterval; iv > 0 && (out.ReattestInterval == 0 || iv < out.ReattestInterval) {
			out.ReattestInterval = iv
		}
		for k, v := range res.Evidence {
			out.Evidence[pt.Type+"."+k] = v
		}
		if res.BoundKey != nil {
			if out.BoundKey != nil {
				return nil, attestors.Rejectf("two composite parts bind the agent key")
			}
			out.BoundKey = res.BoundKey
		}
	}
	if out.MustReattest && !out.CanReattest {
		return nil, attestors.Rejectf("a composite part's evidence must be proved again at every renewal (measured boot), but not every part can attest again; allow re-attestation for every part (aws_iid: allow_reattestation = true)")
	}
	out.Selectors = attestors.SortSelectors(out.Selectors)
	return out, nil
}

// Agent is the agent half over the agent's node attestors, primary first.
type Agent struct {
	parts []attestors.AgentAttestor
}

// NewAgent returns the agent half; parts[0] gives the agent ID.
func NewAgent(parts []attestors.AgentAttestor) (*Agent, error) {
	if len(parts) < 2 {
		return nil, errors.New("composite: at least two node attestors are needed")
	}
	return &Agent{parts: parts}, nil
}

func (a *Agent) Name() string { return Name }

// Payload collects every part's payload.
func (a *Agent) Payload(ctx context.Context, key crypto.Signer) ([]byte, error) {
	p := payload{V: version}
	for _, pa := range a.parts {
		b, err := pa.Payload(ctx, key)
		if err != nil {
			return nil, fmt.Errorf("composite: %s: %w", pa.Name(), err)
		}
		p.Parts = append(p.Parts, part{Type: pa.Name(), Payload: b})
	}
	return json.Marshal(p)
}

// Respond routes a challenge to its part.
func (a *Agent) Respond(ctx context.Context, b []byte) ([]byte, error) {
	var m message
	if err := decode("composite challenge", b, &m); err != nil {
		return nil, fmt.Errorf("composite: %w", err)
	}
	if m.Part < 0 || m.Part >= len(a.parts) {
		return nil, fmt.Errorf("composite: challenge for part %d of %d", m.Part, len(a.parts))
	}
	r, err := a.parts[m.Part].Respond(ctx, m.Data)
	if err != nil {
		return nil, err
	}
	return json.Marshal(message{V: version, Part: m.Part, Data: r})
}
