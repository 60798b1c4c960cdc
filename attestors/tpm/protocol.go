package tpm

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// The messages of the tpm attestation, version 1, carried as the opaque
// payload, challenge and challenge_response bytes of SPIRE's AttestAgent.
// JSON, with []byte as base64. A message of another version is refused.
// Version is the protocol version this package speaks.
const Version = 1

// Payload is the agent's first message.
type Payload struct {
	V         int      `json:"v"`
	EKPublic  []byte   `json:"ek_public"`         // TPMT_PUBLIC
	EKCert    []byte   `json:"ek_cert,omitempty"` // DER, when the TPM has one
	AKPublic  []byte   `json:"ak_public"`         // TPMT_PUBLIC
	KeyPublic []byte   `json:"key_public"`        // TPMT_PUBLIC of the agent SVID key
	Banks     []string `json:"banks"`             // active PCR banks (sha1, sha256, …)
	// Reported by the TPM; informational, never trusted for a decision.
	Manufacturer string `json:"manufacturer,omitempty"`
	Firmware     string `json:"firmware,omitempty"`
}

// Challenge is the server's only challenge.
type Challenge struct {
	V         int              `json:"v"`
	IDObject  []byte           `json:"id_object"`  // MakeCredential output
	EncSecret []byte           `json:"enc_secret"` // MakeCredential output
	Nonce     []byte           `json:"nonce"`      // for the quote and the certification
	PCRs      map[string][]int `json:"pcrs"`       // bank -> PCR indexes to quote
	// EventLog asks for the TCG event log (measured boot is on).
	EventLog bool `json:"event_log,omitempty"`
}

// Response answers the challenge.
type Response struct {
	V             int                       `json:"v"`
	Secret        []byte                    `json:"secret"` // ActivateCredential output
	QuoteAttest   []byte                    `json:"quote_attest"`
	QuoteSig      []byte                    `json:"quote_sig"`
	PCRValues     map[string]map[int][]byte `json:"pcr_values"`
	CertifyAttest []byte                    `json:"certify_attest"`
	CertifySig    []byte                    `json:"certify_sig"`
	EventLog      []byte                    `json:"event_log,omitempty"` // when asked: the raw TCG event log
}

// Decode parses one message strictly: unknown fields, trailing data and
// other versions are refused.
func Decode(what string, b []byte, v any, ver *int) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("malformed %s: %v", what, err)
	}
	if dec.More() {
		return fmt.Errorf("malformed %s: trailing data", what)
	}
	if *ver != Version {
		return fmt.Errorf("%s version %d is not supported (want %d)", what, *ver, Version)
	}
	return nil
}

// PCR banks are named on the wire as verify.BankName writes them (sha1,
// sha256, …) and read with verify.ParseBank.
