// Package hsm is the key-custody contract: every private key Plinth holds is
// a crypto.Signer behind a KeyManager, addressed by a stable ID (`x509-ca-A`).
//
// Backends live in subpackages (memory, disk, pkcs11, awskms) and are chosen
// by name only in cmd/*. Optional abilities are separate interfaces found by
// type assertion (Deleter). Every backend passes the suite in hsm/hsmtest.
// This package is a leaf: it imports nothing of Plinth.
package hsm

import (
	"context"
	"crypto"
	"errors"
	"fmt"
)

// KeyType names a key algorithm.
type KeyType string

// The key types every backend supports. EC keys sign ASN.1 ECDSA; RSA keys
// sign PKCS #1 v1.5, or PSS when opts is an *rsa.PSSOptions.
const (
	ECP256  KeyType = "ec-p256"  // ECDSA on NIST P-256
	ECP384  KeyType = "ec-p384"  // ECDSA on NIST P-384
	RSA2048 KeyType = "rsa-2048" // RSA with a 2048-bit modulus
	RSA4096 KeyType = "rsa-4096" // RSA with a 4096-bit modulus
)

// ParseKeyType parses a key type as written in configuration (`ec-p256`).
func ParseKeyType(s string) (KeyType, error) {
	switch t := KeyType(s); t {
	case ECP256, ECP384, RSA2048, RSA4096:
		return t, nil
	}
	return "", fmt.Errorf("hsm: unknown key type %q (want ec-p256, ec-p384, rsa-2048 or rsa-4096)", s)
}

// ErrNotFound is returned by GetKey when no key has the ID.
var ErrNotFound = errors.New("hsm: key not found")

// KeyManager holds keys by ID. A KeyManager and the Keys it returns are safe
// for concurrent use.
type KeyManager interface {
	// GenerateKey creates a key of type t under id, atomically replacing any
	// key that had the id: GetKey returns the old key or the new one, never
	// neither. The id must not be empty; an unknown type is an error that
	// leaves the old key in place. A Key obtained before the replacement may
	// go on signing with the old key or fail; get it again with GetKey.
	GenerateKey(ctx context.Context, id string, t KeyType) (Key, error)
	// GetKey returns the key with the id, or an error wrapping ErrNotFound.
	GetKey(ctx context.Context, id string) (Key, error)
	// ListKeys returns every key the manager holds, sorted by ID; none is an
	// empty list, not an error.
	ListKeys(ctx context.Context) ([]Key, error)
}

// Key is a private key held by a KeyManager. Its Public method returns an
// *ecdsa.PublicKey or an *rsa.PublicKey matching Type.
type Key interface {
	crypto.Signer
	ID() string
	Type() KeyType
}

// Deleter is implemented by managers that can delete a key.
type Deleter interface {
	// DeleteKey deletes the key with the id, or returns an error wrapping
	// ErrNotFound if there is none.
	DeleteKey(ctx context.Context, id string) error
}

// Provenance is a backend's evidence of where a key lives and that it cannot
// leave. It is shown to operators (`localauthority x509 show`) and kept in
// the audit log; it never holds key material.
type Provenance struct {
	// Backend is the key manager's name: memory, disk, pkcs11, aws_kms.
	Backend string
	// Location addresses the key on the backend, such as
	// `pkcs11:token=plinth;object=x509-ca-A` or a KMS key ARN.
	Location string
	// GeneratedInside and NonExtractable are the backend's own claims (for
	// PKCS#11, CKA_LOCAL and CKA_NEVER_EXTRACTABLE with CKA_SENSITIVE; for
	// KMS, origin AWS_KMS). A file or memory key claims neither.
	GeneratedInside bool
	NonExtractable  bool
	// Attributes are the raw facts behind the claims, by the backend's
	// names (CKA_LOCAL=true, Origin=AWS_KMS, KeySpec=ECC_NIST_P256).
	Attributes map[string]string
}

// Attester is implemented by managers that can tell where a key lives.
type Attester interface {
	// Provenance returns the evidence for the key with the id, or an error
	// wrapping ErrNotFound.
	Provenance(ctx context.Context, id string) (*Provenance, error)
}

// Sweeper is implemented by managers that can find and remove keys they
// created that no longer back any key ID (left by a crash between creating
// a key and recording it). The server calls Sweep periodically.
type Sweeper interface {
	// Sweep removes (or schedules the deletion of) orphaned keys created by
	// this manager and returns how many.
	Sweep(ctx context.Context) (int, error)
}
