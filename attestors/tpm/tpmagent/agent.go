// Package tpmagent is the agent half of the tpm node attestor: it reports
// the TPM's EK and an AK, then answers the server's challenge with the
// activated credential, a quote of the requested PCRs and a certification
// of the agent key by the AK. The server half is package attestors/tpm, which
// links no device code.
package tpmagent

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	proto "github.com/plinth-id/plinth/attestors/tpm"
	"github.com/plinth-id/plinth/tpm"
	"github.com/plinth-id/plinth/tpm/verify"
)

// KeyHolder is an agent key held in the TPM (KeyManager "tpm"); the agent
// half certifies it with the AK so the server can bind the agent SVID to it.
type KeyHolder interface {
	TPMKey() *tpm.Key
}

// Config configures the agent half.
type Config struct {
	TPM *tpm.TPM
	// DataDir keeps the AK blobs (tpm-ak.json), so the AK survives restarts.
	DataDir string
	AKAlg   tpm.AKAlg // default ecc-p256
	// EventLogPath is the TCG event log sent when the server asks for it
	// (measured boot); "" sends none.
	EventLogPath string
}

// Agent is the agent half. One attestation runs at a time.
type Agent struct {
	c Config

	mu      sync.Mutex
	ak      *tpm.Key
	ek      *tpm.EK
	key     *tpm.Key
	pending bool
}

// New validates c.
func New(c Config) (*Agent, error) {
	if c.TPM == nil || c.DataDir == "" {
		return nil, errors.New("tpm: a TPM and a data dir are required")
	}
	if c.AKAlg == "" {
		c.AKAlg = tpm.AKECCP256
	}
	return &Agent{c: c}, nil
}

func (a *Agent) Name() string { return proto.Name }

// akFile holds the AK between runs.
type akFile struct {
	Alg     tpm.AKAlg `json:"alg"`
	Public  []byte    `json:"public"`
	Private []byte    `json:"private"`
}

// loadAK returns the AK, creating and saving it on first use.
func (a *Agent) loadAK(ctx context.Context) (*tpm.Key, error) {
	if a.ak != nil {
		return a.ak, nil
	}
	path := filepath.Join(a.c.DataDir, "tpm-ak.json")
	if b, err := os.ReadFile(path); err == nil {
		var f akFile
		if err := json.Unmarshal(b, &f); err != nil {
			return nil, fmt.Errorf("tpm: AK file %s is corrupt (%v); move it aside to create a new AK", path, err)
		}
		if f.Alg == a.c.AKAlg {
			a.ak = &tpm.Key{Public: f.Public, Private: f.Private}
			return a.ak, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("tpm: could not read AK file: %w", err)
	}
	ak, err := a.c.TPM.CreateAK(ctx, a.c.AKAlg)
	if err != nil {
		return nil, err
	}
	b, _ := json.Marshal(akFile{Alg: a.c.AKAlg, Public: ak.Public, Private: ak.Private})
	if err := os.MkdirAll(a.c.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("tpm: could not create data dir: %w", err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return nil, fmt.Errorf("tpm: could not save AK: %w", err)
	}
	a.ak = ak
	return ak, nil
}

// Payload reads the EK, loads (or creates) the AK and reports both with the
// agent key to be certified.
func (a *Agent) Payload(ctx context.Context, agentKey crypto.Signer) ([]byte, error) {
	kh, ok := agentKey.(KeyHolder)
	if !ok {
		return nil, errors.New(`tpm: the agent key is not in the TPM; configure KeyManager "tpm" with NodeAttestor "tpm"`)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	ek, err := a.c.TPM.EK(ctx)
	if err != nil {
		return nil, err
	}
	ak, err := a.loadAK(ctx)
	if err != nil {
		return nil, err
	}
	active, err := a.c.TPM.PCRBanks(ctx)
	if err != nil {
		return nil, err
	}
	p := proto.Payload{V: proto.Version, EKPublic: ek.Public, EKCert: ek.Cert, AKPublic: ak.Public, KeyPublic: kh.TPMKey().Public}
	for _, b := range active {
		p.Banks = append(p.Banks, verify.BankName(b))
	}
	if info, err := a.c.TPM.Info(ctx); err == nil {
		p.Manufacturer, p.Firmware = info.Manufacturer, info.FirmwareVersion
	}
	a.ek, a.key, a.pending = ek, kh.TPMKey(), true
	return json.Marshal(p)
}

// Respond activates the credential, quotes the requested PCRs and certifies
// the agent key, all bound to the server's nonce.
func (a *Agent) Respond(ctx context.Context, b []byte) ([]byte, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.pending {
		return nil, errors.New("tpm: challenge without a pending attestation")
	}
	a.pending = false
	var c proto.Challenge
	if err := proto.Decode("challenge", b, &c, &c.V); err != nil {
		return nil, fmt.Errorf("tpm: %w", err)
	}
	secret, err := a.c.TPM.ActivateCredential(ctx, a.ek, a.ak, c.IDObject, c.EncSecret)
	if err != nil {
		return nil, err
	}
	sel := verify.PCRSelection{}
	for name, pcrs := range c.PCRs {
		alg, ok := verify.ParseBank(name)
		if !ok {
			return nil, fmt.Errorf("tpm: server asked for unknown PCR bank %q", name)
		}
		sel[alg] = pcrs
	}
	attest, sig, pcrs, err := a.c.TPM.Quote(ctx, a.ak, c.Nonce, sel)
	if err != nil {
		return nil, err
	}
	certAttest, certSig, err := a.c.TPM.Certify(ctx, a.key, a.ak, c.Nonce)
	if err != nil {
		return nil, err
	}
	r := proto.Response{V: proto.Version, Secret: secret, QuoteAttest: attest, QuoteSig: sig, CertifyAttest: certAttest, CertifySig: certSig, PCRValues: map[string]map[int][]byte{}}
	if c.EventLog && a.c.EventLogPath != "" {
		// Read after the quote: the log then holds at least every event the
		// quoted PCRs measured.
		if r.EventLog, err = tpm.ReadEventLog(a.c.EventLogPath); err != nil {
			return nil, err
		}
	}
	for alg, vals := range pcrs {
		r.PCRValues[verify.BankName(alg)] = vals
	}
	return json.Marshal(r)
}
