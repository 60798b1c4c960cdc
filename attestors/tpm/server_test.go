package tpm

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/plinth-id/plinth/attestors"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

func enrolledNone(context.Context, string) (bool, error) { return false, nil }

func TestNewServerFailsClosed(t *testing.T) {
	tests := []struct {
		name string
		c    ServerConfig
		want string
	}{
		{"ek_cert without CAs", ServerConfig{TrustDomain: td, Mode: ModeEKCert}, "tpm: enrollment mode ek_cert needs manufacturer CAs (ek_ca_path); refusing to trust EK certificates without them"},
		{"either without CAs", ServerConfig{TrustDomain: td, Mode: ModeEither, Enrolled: enrolledNone}, "tpm: enrollment mode either needs manufacturer CAs (ek_ca_path); refusing to trust EK certificates without them"},
		{"enrolled without list", ServerConfig{TrustDomain: td, Mode: ModeEnrolled}, "tpm: enrollment mode enrolled needs the enrollment list"},
		{"unknown mode", ServerConfig{TrustDomain: td, Mode: "trust-everyone"}, `tpm: unknown enrollment mode "trust-everyone" (want ek_cert, enrolled, either or both)`},
		{"bad PCR", ServerConfig{TrustDomain: td, Mode: ModeEnrolled, Enrolled: enrolledNone, PCRs: []int{24}}, "tpm: PCR 24 is out of range 0-23"},
		{"no trust domain", ServerConfig{Mode: ModeEnrolled, Enrolled: enrolledNone}, "tpm: trust domain is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewServer(tt.c); err == nil || err.Error() != tt.want {
				t.Fatalf("NewServer = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestAttestRejectsMalformedPayload(t *testing.T) {
	s, err := NewServer(ServerConfig{TrustDomain: td, Mode: ModeEnrolled, Enrolled: enrolledNone})
	if err != nil {
		t.Fatal(err)
	}
	noChallenge := func(context.Context, []byte) ([]byte, error) {
		t.Fatal("a malformed payload must not get a challenge")
		return nil, nil
	}
	tests := []struct {
		name, payload, want string
	}{
		{"garbage", "\x00\x01garbage", "malformed payload: invalid character"},
		{"empty", "", "malformed payload: EOF"},
		{"truncated", `{"v":1,"ek_public":"AAE`, "malformed payload: unexpected EOF"},
		{"unknown field", `{"v":1,"evil":true}`, `malformed payload: json: unknown field "evil"`},
		{"trailing data", `{"v":1} {}`, "malformed payload: trailing data"},
		{"other version", `{"v":2}`, "payload version 2 is not supported (want 1)"},
		{"no EK", `{"v":1}`, "EK public key: "},
		{"EK garbage", `{"v":1,"ek_public":"AAEC"}`, "EK public key: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Attest(t.Context(), []byte(tt.payload), noChallenge)
			if !errors.Is(err, attestors.ErrRejected) || !strings.Contains(err.Error(), "attestation rejected: "+tt.want) {
				t.Fatalf("Attest = %v, want a rejection containing %q", err, tt.want)
			}
		})
	}
}

func TestSelectionNeedsSHA256(t *testing.T) {
	s, _ := NewServer(ServerConfig{TrustDomain: td, Mode: ModeEnrolled, Enrolled: enrolledNone, PCRs: []int{7, 0}})
	if _, err := s.selection([]string{"sha1"}); err == nil || err.Error() != "the TPM reports no sha256 PCR bank (banks [sha1])" {
		t.Fatalf("selection = %v", err)
	}
	sel, err := s.selection([]string{"sha1", "sha256", "md5"})
	if err != nil || len(sel) != 2 {
		t.Fatalf("selection = %v, %v; want sha1 and sha256", sel, err)
	}
	for _, pcrs := range sel {
		if len(pcrs) != 2 || pcrs[0] != 0 || pcrs[1] != 7 {
			t.Fatalf("PCRs %v, want [0 7] sorted", pcrs)
		}
	}
}
