//go:build !cgo

package pkcs11

import (
	"context"
	"errors"

	"github.com/plinth-id/plinth/hsm"
)

var (
	_ hsm.KeyManager = (*Manager)(nil)
	_ hsm.Deleter    = (*Manager)(nil)
	_ hsm.Attester   = (*Manager)(nil)
	_ hsm.Sweeper    = (*Manager)(nil)
)

// errNoCgo is what this package does in a binary built without cgo:
// PKCS#11 modules are C libraries.
var errNoCgo = errors.New("pkcs11: this binary was built without cgo; PKCS#11 needs cgo")

// Manager would hold keys on a PKCS#11 token; this binary was built without
// cgo, so it cannot.
type Manager struct{}

// New returns an error: this binary was built without cgo (CGO_ENABLED=0),
// and PKCS#11 modules are C libraries. Build with cgo to use an HSM.
func New(c Config) (*Manager, error) { return nil, errNoCgo }

// Close does nothing.
func (m *Manager) Close() error { return nil }

// GenerateKey returns an error: built without cgo.
func (m *Manager) GenerateKey(ctx context.Context, id string, t hsm.KeyType) (hsm.Key, error) {
	return nil, errNoCgo
}

// GetKey returns an error: built without cgo.
func (m *Manager) GetKey(ctx context.Context, id string) (hsm.Key, error) { return nil, errNoCgo }

// ListKeys returns an error: built without cgo.
func (m *Manager) ListKeys(ctx context.Context) ([]hsm.Key, error) { return nil, errNoCgo }

// DeleteKey returns an error: built without cgo.
func (m *Manager) DeleteKey(ctx context.Context, id string) error { return errNoCgo }

// Provenance returns an error: built without cgo.
func (m *Manager) Provenance(ctx context.Context, id string) (*hsm.Provenance, error) {
	return nil, errNoCgo
}

// Sweep returns an error: built without cgo.
func (m *Manager) Sweep(ctx context.Context) (int, error) { return 0, errNoCgo }
