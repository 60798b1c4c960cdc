package composite_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/plinth-id/plinth/attestors"
	"github.com/plinth-id/plinth/attestors/composite"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// fake is both halves of a one-round attestor: the server challenges with
// its name, the agent answers with "<name>-ok".
type fake struct {
	name         string
	reattest     bool
	bound        crypto.PublicKey
	mustReattest bool
	disqualify   bool // refuse as a disqualification of its own agent ID
}

func (f fake) Name() string { return f.name }

func (f fake) Payload(context.Context, crypto.Signer) ([]byte, error) {
	return []byte(f.name + "-payload"), nil
}

func (f fake) Respond(_ context.Context, c []byte) ([]byte, error) { return append(c, "-ok"...), nil }

func (f fake) Attest(ctx context.Context, p []byte, ask attestors.Challenge) (*attestors.Result, error) {
	if string(p) != f.name+"-payload" {
		return nil, attestors.Rejectf("%s: wrong payload %q", f.name, p)
	}
	r, err := ask(ctx, []byte(f.name))
	if err != nil {
		return nil, err
	}
	if string(r) != f.name+"-ok" {
		return nil, attestors.Rejectf("%s: wrong answer %q", f.name, r)
	}
	id := spiffeid.RequireFromPath(spiffeid.RequireTrustDomainFromString("example.org"), "/spire/agent/"+f.name+"/x")
	if f.disqualify {
		return nil, &attestors.Disqualification{ID: id, Err: attestors.Rejectf("%s: boot outside policy", f.name)}
	}
	return &attestors.Result{AgentID: id, Selectors: []attestors.Selector{{Type: f.name, Value: "v"}}, CanReattest: f.reattest,
		MustReattest: f.mustReattest, BoundKey: f.bound, Evidence: map[string]string{"k": f.name}}, nil
}

func run(t *testing.T, s *composite.Server, a *composite.Agent, edit func([]byte) []byte) (*attestors.Result, error) {
	t.Helper()
	p, err := a.Payload(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return s.Attest(t.Context(), p, func(ctx context.Context, c []byte) ([]byte, error) {
		r, err := a.Respond(ctx, c)
		if edit != nil {
			r = edit(r)
		}
		return r, err
	})
}

func TestComposite(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cloud, tpm := fake{name: "aws_iid"}, fake{name: "tpm", reattest: true, bound: key.Public()}
	s := composite.NewServer([]attestors.NodeAttestor{cloud, tpm})
	a, err := composite.NewAgent([]attestors.AgentAttestor{cloud, tpm})
	if err != nil {
		t.Fatal(err)
	}
	res, err := run(t, s, a, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.AgentID.Path() != "/spire/agent/aws_iid/x" {
		t.Errorf("agent ID %s, want the primary's", res.AgentID)
	}
	if len(res.Selectors) != 2 || res.Selectors[0].String() != "aws_iid:v" || res.Selectors[1].String() != "tpm:v" {
		t.Errorf("selectors %v, want both parts'", res.Selectors)
	}
	if res.CanReattest {
		t.Error("CanReattest with a part that cannot re-attest")
	}
	if res.BoundKey == nil || res.Evidence["tpm.k"] != "tpm" || res.Evidence["primary"] != "aws_iid" {
		t.Errorf("bound key or evidence lost: %+v", res)
	}

	// A response routed to the wrong part is refused.
	_, err = run(t, s, a, func(r []byte) []byte {
		var m map[string]any
		json.Unmarshal(r, &m)
		m["part"] = 1 - int(m["part"].(float64))
		b, _ := json.Marshal(m)
		return b
	})
	if !errors.Is(err, attestors.ErrRejected) || !strings.Contains(err.Error(), "composite challenge response is for part 1, want 0") {
		t.Fatalf("misrouted response: %v", err)
	}
}

func TestCompositeRejects(t *testing.T) {
	s := composite.NewServer([]attestors.NodeAttestor{fake{name: "aws_iid"}, fake{name: "tpm"}})
	tests := []struct{ name, payload, want string }{
		{"garbage", "{", "malformed composite payload"},
		{"version", `{"v":2,"parts":[]}`, "composite payload version 2 is not supported"},
		{"one part", `{"v":1,"parts":[{"type":"tpm","payload":""}]}`, "a composite attestation needs at least two parts, got 1"},
		{"unknown part", `{"v":1,"parts":[{"type":"tpm"},{"type":"gcp_iit"}]}`, `composite part "gcp_iit" is not enabled on this server (enabled: aws_iid, tpm)`},
		{"duplicate", `{"v":1,"parts":[{"type":"tpm"},{"type":"tpm"}]}`, `composite part "tpm" appears twice`},
		{"a part fails", `{"v":1,"parts":[{"type":"tpm","payload":"YQ=="},{"type":"aws_iid"}]}`, `composite part tpm: attestation rejected: tpm: wrong payload "a"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Attest(t.Context(), []byte(tt.payload), func(context.Context, []byte) ([]byte, error) { return nil, errors.New("no challenge expected") })
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Attest = %v, want %q", err, tt.want)
			}
		})
	}
	if _, err := composite.NewAgent([]attestors.AgentAttestor{fake{name: "tpm"}}); err == nil {
		t.Fatal("a composite agent with one part was accepted")
	}
}

// A secondary part proves nothing about the primary's identity: its
// disqualification refuses the attestation but evicts nobody. The primary's
// is passed on.
func TestCompositeDisqualification(t *testing.T) {
	for _, tc := range []struct {
		parts []fake
		want  string // the disqualified agent's path, "" for none
	}{
		{[]fake{{name: "aws_iid", reattest: true}, {name: "tpm", reattest: true, disqualify: true}}, ""},
		{[]fake{{name: "tpm", reattest: true, disqualify: true}, {name: "aws_iid", reattest: true}}, "/spire/agent/tpm/x"},
	} {
		s := composite.NewServer([]attestors.NodeAttestor{tc.parts[0], tc.parts[1]})
		a, _ := composite.NewAgent([]attestors.AgentAttestor{tc.parts[0], tc.parts[1]})
		_, err := run(t, s, a, nil)
		var dq *attestors.Disqualification
		if !errors.Is(err, attestors.ErrRejected) || errors.As(err, &dq) != (tc.want != "") || (dq != nil && dq.ID.Path() != tc.want) {
			t.Errorf("primary %s: err %v, disqualification %v", tc.parts[0].name, err, dq)
		}
	}
}

// Evidence that must be proved at every renewal cannot ride with a part
// that cannot attest again.
func TestCompositeMustReattest(t *testing.T) {
	cloud, tpm := fake{name: "aws_iid"}, fake{name: "tpm", reattest: true, mustReattest: true}
	s := composite.NewServer([]attestors.NodeAttestor{cloud, tpm})
	a, _ := composite.NewAgent([]attestors.AgentAttestor{cloud, tpm})
	_, err := run(t, s, a, nil)
	if !errors.Is(err, attestors.ErrRejected) || !strings.Contains(err.Error(), "allow re-attestation for every part (aws_iid: allow_reattestation = true)") {
		t.Fatalf("got %v", err)
	}
	cloud.reattest = true
	s = composite.NewServer([]attestors.NodeAttestor{cloud, tpm})
	if res, err := run(t, s, a, nil); err != nil || !res.MustReattest || !res.CanReattest {
		t.Fatalf("got %+v, %v", res, err)
	}
}
