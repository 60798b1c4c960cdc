package tpm

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/plinth-id/plinth/attestors"
	"github.com/plinth-id/plinth/tpm/verify"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Name is the attestation type on the wire.
const Name = "tpm"

// Mode says how the server decides to trust an endorsement key.
type Mode string

const (
	// ModeEKCert trusts an EK whose certificate chains to a configured
	// manufacturer CA.
	ModeEKCert Mode = "ek_cert"
	// ModeEnrolled trusts an EK an operator enrolled (plinth-server tpm enroll).
	ModeEnrolled Mode = "enrolled"
	// ModeEither trusts an EK that passes either check.
	ModeEither Mode = "either"
	// ModeBoth requires both.
	ModeBoth Mode = "both"
)

// ParseMode parses a mode as written in configuration.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeEKCert, ModeEnrolled, ModeEither, ModeBoth:
		return m, nil
	}
	return "", fmt.Errorf("tpm: unknown enrollment mode %q (want ek_cert, enrolled, either or both)", s)
}

// ServerConfig configures the server half.
type ServerConfig struct {
	TrustDomain spiffeid.TrustDomain
	Mode        Mode
	// EKCerts verifies EK certificates against the manufacturer CAs. Required
	// by every mode but enrolled: with no CA configured the server fails closed.
	EKCerts *verify.EKVerifier
	// Enrolled reports whether an EK hash is enrolled. Required by every mode
	// but ek_cert.
	Enrolled func(ctx context.Context, ekHash string) (bool, error)
	// PCRs to quote, in every active bank; default 0-7. With measured boot,
	// the PCRs its policies read are quoted too.
	PCRs []int
	// MeasuredBoot, when set, requires the event log and a boot that passes
	// its policy.
	MeasuredBoot *MeasuredBoot
	Clock        func() time.Time
}

// MeasuredBoot is the boot policy of a server that attests measured boot.
type MeasuredBoot struct {
	// Policies are evaluated on every attestation; each that passes adds
	// the selector tpm:policy:<name>.
	Policies []verify.Policy
	// Required names the policy a node must pass to be attested.
	Required string
	// Audit records a failing required policy in the evidence and the audit
	// log without refusing the node.
	Audit bool
	// ReattestInterval: see attestors.Result.ReattestInterval. 0: at every
	// agent-SVID renewal.
	ReattestInterval time.Duration
}

// Server is the server half: it checks the EK, sends a credential
// challenge with a fresh nonce, and verifies the activation, the quote and
// the certification of the agent's key.
type Server struct{ c ServerConfig }

// NewServer validates c.
func NewServer(c ServerConfig) (*Server, error) {
	if c.TrustDomain.IsZero() {
		return nil, errors.New("tpm: trust domain is required")
	}
	if _, err := ParseMode(string(c.Mode)); err != nil {
		return nil, err
	}
	if c.Mode != ModeEnrolled && c.EKCerts == nil {
		return nil, fmt.Errorf("tpm: enrollment mode %s needs manufacturer CAs (ek_ca_path); refusing to trust EK certificates without them", c.Mode)
	}
	if c.Mode != ModeEKCert && c.Enrolled == nil {
		return nil, fmt.Errorf("tpm: enrollment mode %s needs the enrollment list", c.Mode)
	}
	if len(c.PCRs) == 0 {
		c.PCRs = []int{0, 1, 2, 3, 4, 5, 6, 7}
	}
	for _, p := range c.PCRs {
		if p < 0 || p > 23 {
			return nil, fmt.Errorf("tpm: PCR %d is out of range 0-23", p)
		}
	}
	if m := c.MeasuredBoot; m != nil {
		c.PCRs = slices.Clone(c.PCRs) // not the caller's array
		var required bool
		for i := range m.Policies {
			if err := m.Policies[i].Validate(); err != nil {
				return nil, fmt.Errorf("tpm: measured boot: %w", err)
			}
			required = required || m.Policies[i].Name == m.Required
			c.PCRs = append(c.PCRs, m.Policies[i].NeededPCRs()...)
		}
		if !required {
			return nil, fmt.Errorf("tpm: measured boot needs a policy every node must pass (no policy named %q); there is no accept-all default", m.Required)
		}
		slices.Sort(c.PCRs)
		c.PCRs = slices.Compact(c.PCRs)
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	return &Server{c: c}, nil
}

func (s *Server) Name() string { return Name }

// Attest runs the attestation. Every refusal wraps attestors.ErrRejected and
// names the check that failed; nothing is kept between attestations, so a
// nonce or secret can never be used twice.
func (s *Server) Attest(ctx context.Context, b []byte, ask attestors.Challenge) (*attestors.Result, error) {
	var p Payload
	if err := Decode("payload", b, &p, &p.V); err != nil {
		return nil, attestors.Rejectf("%v", err)
	}
	ek, err := verify.ParsePublic(p.EKPublic)
	if err != nil {
		return nil, attestors.Rejectf("EK public key: %v", err)
	}
	ekHash, err := verify.EKHash(ek)
	if err != nil {
		return nil, attestors.Rejectf("EK public key: %v", err)
	}
	evidence := map[string]string{"ek_hash": ekHash}
	id, err := spiffeid.FromSegments(s.c.TrustDomain, "spire", "agent", Name, ekHash)
	if err != nil {
		return nil, err
	}
	reject := func(format string, args ...any) error {
		return attestors.RejectionFor(id, attestors.Rejectf("EK %s: %s", ekHash, fmt.Sprintf(format, args...)))
	}
	cert, trust, err := s.trustEK(ctx, ek, ekHash, p.EKCert)
	if err != nil {
		return nil, reject("%v", err)
	}
	evidence["ek_trust"] = trust
	ak, err := verify.ParsePublic(p.AKPublic)
	if err != nil {
		return nil, reject("AK: %v", err)
	}
	if err := verify.CheckAK(ak); err != nil {
		return nil, reject("%v", err)
	}
	key, err := verify.ParsePublic(p.KeyPublic)
	if err != nil {
		return nil, reject("agent key: %v", err)
	}
	if err := verify.CheckAgentKey(key); err != nil {
		return nil, reject("%v", err)
	}
	sel, err := s.selection(p.Banks)
	if err != nil {
		return nil, reject("%v", err)
	}

	secret, nonce := make([]byte, 32), make([]byte, 32)
	rand.Read(secret)
	rand.Read(nonce)
	idObject, encSecret, err := verify.MakeCredential(ek, ak.Name, secret)
	if err != nil {
		return nil, reject("could not make the credential challenge: %v", err)
	}
	c := Challenge{V: Version, IDObject: idObject, EncSecret: encSecret, Nonce: nonce, PCRs: map[string][]int{}, EventLog: s.c.MeasuredBoot != nil}
	for alg, pcrs := range sel {
		c.PCRs[verify.BankName(alg)] = pcrs
	}
	cb, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	rb, err := ask(ctx, cb)
	if err != nil {
		return nil, fmt.Errorf("tpm: challenge for EK %s: %w", ekHash, err)
	}
	var r Response
	if err := Decode("challenge response", rb, &r, &r.V); err != nil {
		return nil, reject("%v", err)
	}
	if subtle.ConstantTimeCompare(r.Secret, secret) != 1 {
		return nil, reject("credential activation: wrong secret (the AK is not in the TPM that holds this EK)")
	}
	pcrs, err := pcrValues(r.PCRValues)
	if err != nil {
		return nil, reject("%v", err)
	}
	if err := verify.VerifyQuote(ak, r.QuoteAttest, r.QuoteSig, nonce, sel, pcrs); err != nil {
		return nil, reject("%v", err)
	}
	if err := verify.VerifyCertify(ak, r.CertifyAttest, r.CertifySig, nonce, key); err != nil {
		return nil, reject("%v", err)
	}

	akAlg := algName(ak)
	sels := []attestors.Selector{
		{Type: Name, Value: "ek_hash:" + ekHash},
		{Type: Name, Value: "ak_alg:" + akAlg},
	}
	var interval time.Duration
	if m := s.c.MeasuredBoot; m != nil {
		// The TPM has now proved it holds the EK and signed these PCRs: a
		// boot outside policy disqualifies the node it identifies.
		boot, err := m.check(r.EventLog, pcrs, evidence)
		if err != nil {
			return nil, &attestors.Disqualification{ID: id, Err: reject("%v", err)}
		}
		sels = append(sels, boot...)
		interval = m.ReattestInterval
	}
	if cert != nil {
		issuer := cert.Issuer.String()
		sels = append(sels, attestors.Selector{Type: Name, Value: "ek_cert_issuer:" + issuer})
		evidence["ek_cert_issuer"] = issuer
		if m := manufacturer(cert); m != "" {
			sels = append(sels, attestors.Selector{Type: Name, Value: "ek_manufacturer:" + m})
			evidence["ek_manufacturer"] = m
		}
	}
	for alg, vals := range pcrs {
		for n, v := range vals {
			sels = append(sels, attestors.Selector{Type: Name, Value: "pcr:" + verify.BankName(alg) + ":" + strconv.Itoa(n) + ":" + hex.EncodeToString(v)})
		}
	}
	evidence["ak_alg"] = akAlg
	evidence["pcrs_quoted"] = strconv.Itoa(len(pcrs[tpm2.TPMAlgSHA256]))
	if p.Manufacturer != "" {
		evidence["tpm_reported_manufacturer"] = p.Manufacturer
	}
	if p.Firmware != "" {
		evidence["tpm_reported_firmware"] = p.Firmware
	}
	return &attestors.Result{
		AgentID:     id,
		Selectors:   attestors.SortSelectors(sels),
		CanReattest: true,
		Evidence:    evidence,
		BoundKey:    key.Key,

		ReattestInterval: interval,
		MustReattest:     s.c.MeasuredBoot != nil,
	}, nil
}

// trustEK applies the enrollment mode; it returns the verified certificate
// (if any) and how the EK was trusted.
func (s *Server) trustEK(ctx context.Context, ek *verify.Public, ekHash string, certDER []byte) (*x509.Certificate, string, error) {
	var cert *x509.Certificate
	var certErr error
	if s.c.Mode != ModeEnrolled {
		if len(certDER) == 0 {
			certErr = errors.New("the TPM sent no EK certificate")
		} else {
			cert, certErr = s.c.EKCerts.Verify(certDER, ek, s.c.Clock())
		}
	}
	enrolled := false
	if s.c.Mode != ModeEKCert {
		ok, err := s.c.Enrolled(ctx, ekHash)
		if err != nil {
			return nil, "", fmt.Errorf("could not check the enrollment list: %w", err)
		}
		enrolled = ok
	}
	switch s.c.Mode {
	case ModeEKCert:
		if certErr != nil {
			return nil, "", certErr
		}
		return cert, "ek_cert", nil
	case ModeEnrolled:
		if !enrolled {
			return nil, "", errors.New("EK is not enrolled")
		}
		return nil, "enrolled", nil
	case ModeBoth:
		if certErr != nil {
			return nil, "", certErr
		}
		if !enrolled {
			return nil, "", errors.New("EK is not enrolled")
		}
		return cert, "ek_cert+enrolled", nil
	default: // either
		if certErr == nil {
			return cert, "ek_cert", nil
		}
		if enrolled {
			return nil, "enrolled", nil
		}
		return nil, "", fmt.Errorf("EK is not enrolled and its certificate is not trusted (%v)", certErr)
	}
}

// selection is the configured PCRs in every bank the TPM reports active
// (sha256 is required: a TPM without it cannot attest).
func (s *Server) selection(reported []string) (verify.PCRSelection, error) {
	sel := verify.PCRSelection{}
	for _, b := range reported {
		alg, ok := verify.ParseBank(b)
		if !ok {
			continue
		}
		sel[alg] = slices.Clone(s.c.PCRs)
		sort.Ints(sel[alg])
	}
	if _, ok := sel[tpm2.TPMAlgSHA256]; !ok {
		return nil, fmt.Errorf("the TPM reports no sha256 PCR bank (banks %v)", reported)
	}
	return sel, nil
}

func pcrValues(in map[string]map[int][]byte) (verify.PCRValues, error) {
	out := verify.PCRValues{}
	for b, vals := range in {
		alg, ok := verify.ParseBank(b)
		if !ok {
			return nil, fmt.Errorf("quote: unknown PCR bank %q", b)
		}
		out[alg] = vals
	}
	return out, nil
}

func algName(ak *verify.Public) string {
	if ak.Area.Type == tpm2.TPMAlgRSA {
		return "rsa-2048"
	}
	return "ecc-p256"
}

// manufacturer is the TPM manufacturer the verified EK certificate names
// (its TCG subject alternative name), or "".
func manufacturer(cert *x509.Certificate) string {
	info, err := verify.ParseEKCertInfo(cert)
	if err != nil {
		return ""
	}
	return info.Manufacturer
}
