package memory

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/plinth-id/plinth/hsm"
	"github.com/plinth-id/plinth/hsm/internal/softkey"
)

var (
	_ hsm.KeyManager = (*Manager)(nil)
	_ hsm.Deleter    = (*Manager)(nil)
)

// Manager holds keys in memory. It implements hsm.KeyManager and hsm.Deleter
// and is safe for concurrent use. The zero Manager holds no keys and is ready
// to use.
type Manager struct {
	mu   sync.RWMutex
	keys map[string]*softkey.Key
}

// New returns a Manager that holds no keys.
func New() *Manager {
	return &Manager{keys: make(map[string]*softkey.Key)}
}

// GenerateKey creates a key of type t under id, replacing any key that had
// the id. Keys returned earlier under the id go on signing with the old key.
func (m *Manager) GenerateKey(ctx context.Context, id string, t hsm.KeyType) (hsm.Key, error) {
	if id == "" {
		return nil, errors.New("memory: key id is empty")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memory: could not generate key %q: %w", id, err)
	}
	k, err := softkey.Generate(id, t)
	if err != nil {
		return nil, fmt.Errorf("memory: could not generate key %q: %w", id, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.keys == nil {
		m.keys = make(map[string]*softkey.Key)
	}
	m.keys[id] = k
	return k, nil
}

// GetKey returns the key with the id, or an error wrapping hsm.ErrNotFound.
func (m *Manager) GetKey(ctx context.Context, id string) (hsm.Key, error) {
	m.mu.RLock()
	k, ok := m.keys[id]
	m.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("memory: key %q: %w", id, hsm.ErrNotFound)
	}
	return k, nil
}

// ListKeys returns every key, sorted by ID.
func (m *Manager) ListKeys(ctx context.Context) ([]hsm.Key, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	keys := make([]hsm.Key, 0, len(m.keys))
	for _, id := range slices.Sorted(maps.Keys(m.keys)) {
		keys = append(keys, m.keys[id])
	}
	return keys, nil
}

// DeleteKey deletes the key with the id, or returns an error wrapping
// hsm.ErrNotFound if there is none. Keys returned earlier under the id go on
// signing.
func (m *Manager) DeleteKey(ctx context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.keys[id]; !ok {
		return fmt.Errorf("memory: key %q: %w", id, hsm.ErrNotFound)
	}
	delete(m.keys, id)
	return nil
}

// Provenance says the key lives in this process's memory: generated here,
// gone at exit, and extractable by anyone who can read the process.
func (m *Manager) Provenance(ctx context.Context, id string) (*hsm.Provenance, error) {
	if _, err := m.GetKey(ctx, id); err != nil {
		return nil, err
	}
	return &hsm.Provenance{Backend: "memory", Location: "memory:" + id, Attributes: map[string]string{"persisted": "false"}}, nil
}
