package tpm_test

import (
	"bytes"
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"github.com/google/go-tpm/tpm2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/plinth-id/plinth/attestors"
	tpmattestor "github.com/plinth-id/plinth/attestors/tpm"
	"github.com/plinth-id/plinth/attestors/tpm/tpmagent"
	"github.com/plinth-id/plinth/hsm"
	"github.com/plinth-id/plinth/hsm/tpmkeys"
	"github.com/plinth-id/plinth/simulator"
	"github.com/plinth-id/plinth/tpm"
	"github.com/plinth-id/plinth/tpm/verify"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// rig is a node with the in-process simulator and a server that trusts its
// manufacturer CA. The simulator is a process-wide singleton: tests using
// a rig do not run in parallel.
type rig struct {
	dir      string
	ekCerts  *verify.EKVerifier
	sim      *simulator.InProcess
	agent    *tpmagent.Agent
	key      hsm.Key
	ekHash   string
	enrolled map[string]bool
	server   *tpmattestor.Server
}

func newRig(t *testing.T, mode tpmattestor.Mode, caPEM []byte) *rig {
	t.Helper()
	dir := t.TempDir()
	state := filepath.Join(dir, "sim.state")
	if caPEM == nil {
		var err error
		if caPEM, err = simulator.ManufacturerCAPEM(state); err != nil {
			t.Fatal(err)
		}
	}
	sim, err := simulator.OpenInProcess(state)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	r := &rig{dir: dir, sim: sim, enrolled: map[string]bool{}}
	keys, err := tpmkeys.New(sim.TPM, dir)
	if err != nil {
		t.Fatal(err)
	}
	if r.key, err = keys.GenerateKey(t.Context(), "agent-svid-A", hsm.ECP256); err != nil {
		t.Fatal(err)
	}
	if r.agent, err = tpmagent.New(tpmagent.Config{TPM: sim.TPM, DataDir: dir}); err != nil {
		t.Fatal(err)
	}
	ek, err := sim.EK(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	pub, err := verify.ParsePublic(ek.Public)
	if err != nil {
		t.Fatal(err)
	}
	r.ekHash, _ = verify.EKHash(pub)
	if r.ekCerts, err = verify.LoadEKVerifier(caPEM); err != nil {
		t.Fatal(err)
	}
	r.server = r.newServer(t, mode)
	return r
}

func (r *rig) newServer(t *testing.T, mode tpmattestor.Mode) *tpmattestor.Server {
	t.Helper()
	s, err := tpmattestor.NewServer(tpmattestor.ServerConfig{
		TrustDomain: td, Mode: mode, EKCerts: r.ekCerts,
		Enrolled: func(_ context.Context, h string) (bool, error) { return r.enrolled[h], nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// attest runs one attestation; edit, when set, rewrites the agent's
// response before the server sees it (what an attacker controls).
func (r *rig) attest(t *testing.T, payload func(*tpmattestor.Payload), edit func(c *tpmattestor.Challenge, resp *tpmattestor.Response)) (*attestors.Result, error) {
	t.Helper()
	p, err := r.agent.Payload(t.Context(), r.key)
	if err != nil {
		t.Fatal(err)
	}
	if payload != nil {
		var pl tpmattestor.Payload
		json.Unmarshal(p, &pl)
		payload(&pl)
		p, _ = json.Marshal(pl)
	}
	return r.server.Attest(t.Context(), p, func(ctx context.Context, cb []byte) ([]byte, error) {
		rb, err := r.agent.Respond(ctx, cb)
		if err != nil || edit == nil {
			return rb, err
		}
		var c tpmattestor.Challenge
		var resp tpmattestor.Response
		json.Unmarshal(cb, &c)
		json.Unmarshal(rb, &resp)
		edit(&c, &resp)
		return json.Marshal(resp)
	})
}

func wantRejected(t *testing.T, err error, want string) {
	t.Helper()
	if !errors.Is(err, attestors.ErrRejected) || !strings.Contains(err.Error(), want) {
		t.Fatalf("attestation error = %v\nwant a rejection containing %q", err, want)
	}
}

func TestAttestWithEKCertificate(t *testing.T) {
	r := newRig(t, tpmattestor.ModeEKCert, nil)
	res, err := r.attest(t, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := "spiffe://example.org/spire/agent/tpm/" + r.ekHash; res.AgentID.String() != want {
		t.Errorf("agent ID %s, want %s", res.AgentID, want)
	}
	if !res.CanReattest {
		t.Error("a TPM node must re-attest at renewal")
	}
	if k, ok := res.BoundKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(r.key.Public()) {
		t.Error("the result is not bound to the TPM-resident agent key")
	}
	have := map[string]bool{}
	pcrs := 0
	for _, s := range res.Selectors {
		if strings.HasPrefix(s.Value, "pcr:") {
			pcrs++
			continue
		}
		have[s.String()] = true
	}
	for _, want := range []string{"tpm:ek_hash:" + r.ekHash, "tpm:ak_alg:ecc-p256", "tpm:ek_manufacturer:id:4D534654"} {
		if !have[want] {
			t.Errorf("selector %s missing from %v", want, res.Selectors)
		}
	}
	if pcrs < 16 {
		t.Errorf("%d PCR selectors, want PCRs 0-7 in every bank (at least sha1 and sha256)", pcrs)
	}
}

func TestAttestEnrollment(t *testing.T) {
	r := newRig(t, tpmattestor.ModeEnrolled, nil)
	_, err := r.attest(t, nil, nil)
	wantRejected(t, err, "EK "+r.ekHash+": EK is not enrolled")
	r.enrolled[r.ekHash] = true
	if _, err := r.attest(t, nil, nil); err != nil {
		t.Fatalf("enrolled EK refused: %v", err)
	}

	// both: the certificate alone is not enough.
	r.server = r.newServer(t, tpmattestor.ModeBoth)
	if _, err := r.attest(t, nil, nil); err != nil {
		t.Fatalf("mode both, enrolled and certified: %v", err)
	}
	delete(r.enrolled, r.ekHash)
	_, err = r.attest(t, nil, nil)
	wantRejected(t, err, "EK is not enrolled")

	// either: the certificate is enough.
	r.server = r.newServer(t, tpmattestor.ModeEither)
	if _, err := r.attest(t, nil, nil); err != nil {
		t.Fatalf("mode either, certified: %v", err)
	}
	_, err = r.attest(t, func(p *tpmattestor.Payload) { p.EKCert = nil }, nil)
	wantRejected(t, err, "EK is not enrolled and its certificate is not trusted (the TPM sent no EK certificate)")
}

func TestAttestRejects(t *testing.T) {
	r := newRig(t, tpmattestor.ModeEKCert, nil)
	ctx := context.Background()
	otherAK, err := r.sim.CreateAK(ctx, tpm.AKECCP256)
	if err != nil {
		t.Fatal(err)
	}
	otherKey, err := r.sim.CreateKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var old *tpmattestor.Response
	if _, err := r.attest(t, nil, func(_ *tpmattestor.Challenge, resp *tpmattestor.Response) { c := *resp; old = &c }); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		payload func(*tpmattestor.Payload)
		edit    func(*tpmattestor.Challenge, *tpmattestor.Response)
		want    string
	}{
		{"AK that is not restricted", func(p *tpmattestor.Payload) { p.AKPublic = p.KeyPublic }, nil, "verify: ak: "},
		{"agent key that is restricted", func(p *tpmattestor.Payload) { p.KeyPublic = p.AKPublic }, nil, "verify: agent key: "},
		{"EK certificate missing", func(p *tpmattestor.Payload) { p.EKCert = nil }, nil, "the TPM sent no EK certificate"},
		{"EK certificate garbage", func(p *tpmattestor.Payload) { p.EKCert = []byte("garbage") }, nil, "verify: ek certificate: "},
		{"truncated AK", func(p *tpmattestor.Payload) { p.AKPublic = p.AKPublic[:10] }, nil, "AK: verify: public area: "},
		{"no sha256 bank", func(p *tpmattestor.Payload) { p.Banks = []string{"sha1"} }, nil, "the TPM reports no sha256 PCR bank"},
		{"wrong activation secret", nil, func(_ *tpmattestor.Challenge, r *tpmattestor.Response) { r.Secret[0] ^= 1 }, "credential activation: wrong secret"},
		{"quote over an old nonce", nil, func(_ *tpmattestor.Challenge, r *tpmattestor.Response) {
			r.QuoteAttest, r.QuoteSig, r.PCRValues = old.QuoteAttest, old.QuoteSig, old.PCRValues
		}, "verify: quote: nonce does not match"},
		{"certification over an old nonce", nil, func(_ *tpmattestor.Challenge, r *tpmattestor.Response) {
			r.CertifyAttest, r.CertifySig = old.CertifyAttest, old.CertifySig
		}, "verify: certify: nonce does not match"},
		{"PCR values that do not match the quote", nil, func(_ *tpmattestor.Challenge, r *tpmattestor.Response) {
			r.PCRValues["sha256"][7] = bytes.Repeat([]byte{0xff}, 32) // the simulator's PCRs start at zero
		}, "verify: quote: PCR digest does not match"},
		{"quote signed by another AK", nil, func(c *tpmattestor.Challenge, resp *tpmattestor.Response) {
			sel := verify.PCRSelection{}
			for b, p := range c.PCRs {
				sel[bank(b)] = p
			}
			a, s, _, err := r.sim.Quote(ctx, otherAK, c.Nonce, sel)
			if err != nil {
				t.Fatal(err)
			}
			resp.QuoteAttest, resp.QuoteSig = a, s
		}, "verify: quote: signature does not verify"},
		{"agent key not certified by the AK", nil, func(c *tpmattestor.Challenge, resp *tpmattestor.Response) {
			a, s, err := r.sim.Certify(ctx, otherKey, otherAK, c.Nonce)
			if err != nil {
				t.Fatal(err)
			}
			resp.CertifyAttest, resp.CertifySig = a, s
		}, "verify: certify: "},
		{"another key certified by the AK", nil, func(c *tpmattestor.Challenge, resp *tpmattestor.Response) {
			ak := loadAK(t, r)
			a, s, err := r.sim.Certify(ctx, otherKey, ak, c.Nonce)
			if err != nil {
				t.Fatal(err)
			}
			resp.CertifyAttest, resp.CertifySig = a, s
		}, "verify: certify: certified key is not the presented agent key"},
		{"garbage quote", nil, func(_ *tpmattestor.Challenge, r *tpmattestor.Response) { r.QuoteAttest = []byte{1, 2, 3} }, "verify: quote: "},
		{"truncated signature", nil, func(_ *tpmattestor.Challenge, r *tpmattestor.Response) { r.QuoteSig = r.QuoteSig[:len(r.QuoteSig)/2] }, "verify: quote: "},
		{"unknown PCR bank", nil, func(_ *tpmattestor.Challenge, r *tpmattestor.Response) { r.PCRValues["md5"] = nil }, `quote: unknown PCR bank "md5"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := r.attest(t, tt.payload, tt.edit)
			wantRejected(t, err, tt.want)
		})
	}
}

// loadAK returns the AK the agent saved in its data dir.
func loadAK(t *testing.T, r *rig) *tpm.Key {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(r.dir, "tpm-ak.json"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct{ Public, Private []byte }
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	return &tpm.Key{Public: f.Public, Private: f.Private}
}

func TestAttestUnknownCA(t *testing.T) {
	other, err := simulator.ManufacturerCAPEM(filepath.Join(t.TempDir(), "other.state"))
	if err != nil {
		t.Fatal(err)
	}
	r := newRig(t, tpmattestor.ModeEKCert, other)
	_, err = r.attest(t, nil, nil)
	wantRejected(t, err, "verify: ek certificate: ")
}

// An EK certificate from the right manufacturer, but for another TPM's EK.
func TestAttestEKCertificateForAnotherKey(t *testing.T) {
	otherState := filepath.Join(t.TempDir(), "other.state")
	other, err := simulator.OpenInProcess(otherState)
	if err != nil {
		t.Fatal(err)
	}
	otherEK, err := other.EK(t.Context())
	other.Close()
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := simulator.ManufacturerCAPEM(otherState)
	if err != nil {
		t.Fatal(err)
	}
	r := newRig(t, tpmattestor.ModeEKCert, caPEM)
	_, err = r.attest(t, func(p *tpmattestor.Payload) { p.EKCert = otherEK.Cert }, nil)
	wantRejected(t, err, "verify: ek certificate: EK certificate is for a different key")
}

func TestAttestGarbageResponseAndTimeout(t *testing.T) {
	r := newRig(t, tpmattestor.ModeEKCert, nil)
	p, err := r.agent.Payload(t.Context(), r.key)
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.server.Attest(t.Context(), p, func(context.Context, []byte) ([]byte, error) { return []byte("{garbage"), nil })
	wantRejected(t, err, "malformed challenge response")

	// An agent that stops answering: the server gives up when its context
	// ends, with no rejection recorded against the node and nothing kept.
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	_, err = r.server.Attest(ctx, p, func(ctx context.Context, _ []byte) ([]byte, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Attest with a silent agent = %v, want the deadline error", err)
	}
}

func bank(name string) tpm2.TPMAlgID { a, _ := verify.ParseBank(name); return a }
