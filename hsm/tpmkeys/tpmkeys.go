// Package tpmkeys is the agent's KeyManager "tpm": keys created inside the
// TPM (fixedTPM, sensitiveDataOrigin) whose private part never leaves it.
// Each key is kept as the TPM's wrapped blobs in a file under a directory,
// loaded under the storage root key when it signs. Only ECDSA P-256 keys are
// supported: they are what the TPM attestor certifies for the agent SVID.
package tpmkeys

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/plinth-id/plinth/hsm"
	"github.com/plinth-id/plinth/tpm"
)

const suffix = ".tpmkey"

// Manager holds TPM keys. It is safe for concurrent use.
type Manager struct {
	t   *tpm.TPM
	dir string
	mu  sync.Mutex
}

// New returns a manager keeping key blobs in dir.
func New(t *tpm.TPM, dir string) (*Manager, error) {
	if t == nil {
		return nil, errors.New("tpmkeys: a TPM is required")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("tpmkeys: could not create %s: %w", dir, err)
	}
	return &Manager{t: t, dir: dir}, nil
}

// Key is a TPM-resident key.
type Key struct {
	id     string
	blob   *tpm.Key
	signer crypto.Signer
}

func (k *Key) ID() string               { return k.id }
func (k *Key) Type() hsm.KeyType        { return hsm.ECP256 }
func (k *Key) Public() crypto.PublicKey { return k.signer.Public() }
func (k *Key) TPMKey() *tpm.Key         { return k.blob }
func (k *Key) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return k.signer.Sign(r, digest, opts)
}

type file struct {
	Public  []byte `json:"public"`
	Private []byte `json:"private"`
}

func (m *Manager) path(id string) (string, error) {
	if id == "" || strings.ContainsAny(id, `/\`) || strings.HasPrefix(id, ".") {
		return "", fmt.Errorf("tpmkeys: invalid key id %q", id)
	}
	return filepath.Join(m.dir, id+suffix), nil
}

// GenerateKey creates a P-256 signing key in the TPM and saves its blobs,
// replacing any key with the id.
func (m *Manager) GenerateKey(ctx context.Context, id string, t hsm.KeyType) (hsm.Key, error) {
	if t != hsm.ECP256 {
		return nil, fmt.Errorf("tpmkeys: key type %s is not supported (the TPM key manager makes ec-p256 keys)", t)
	}
	path, err := m.path(id)
	if err != nil {
		return nil, err
	}
	blob, err := m.t.CreateKey(ctx)
	if err != nil {
		return nil, err
	}
	b, _ := json.Marshal(file{Public: blob.Public, Private: blob.Private})
	m.mu.Lock()
	defer m.mu.Unlock()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return nil, fmt.Errorf("tpmkeys: could not save key %q: %w", id, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, fmt.Errorf("tpmkeys: could not save key %q: %w", id, err)
	}
	return m.key(id, blob)
}

func (m *Manager) key(id string, blob *tpm.Key) (*Key, error) {
	s, err := m.t.Signer(blob)
	if err != nil {
		return nil, err
	}
	return &Key{id: id, blob: blob, signer: s}, nil
}

// GetKey loads the key saved under id.
func (m *Manager) GetKey(ctx context.Context, id string) (hsm.Key, error) {
	path, err := m.path(id)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %q", hsm.ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("tpmkeys: could not read key %q: %w", id, err)
	}
	var f file
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("tpmkeys: key file %s is corrupt (%v); move it aside so the agent makes a new key", path, err)
	}
	return m.key(id, &tpm.Key{Public: f.Public, Private: f.Private})
}

// ListKeys returns every saved key, sorted by ID.
func (m *Manager) ListKeys(ctx context.Context) ([]hsm.Key, error) {
	names, err := filepath.Glob(filepath.Join(m.dir, "*"+suffix))
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	out := []hsm.Key{}
	for _, n := range names {
		k, err := m.GetKey(ctx, strings.TrimSuffix(filepath.Base(n), suffix))
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, nil
}

// DeleteKey removes the key's blobs (the TPM holds nothing else of it).
func (m *Manager) DeleteKey(ctx context.Context, id string) error {
	path, err := m.path(id)
	if err != nil {
		return err
	}
	if err := os.Remove(path); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w: %q", hsm.ErrNotFound, id)
	} else if err != nil {
		return fmt.Errorf("tpmkeys: could not delete key %q: %w", id, err)
	}
	return nil
}
