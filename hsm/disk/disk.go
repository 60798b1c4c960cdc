package disk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/plinth-id/plinth/hsm"
	"github.com/plinth-id/plinth/hsm/internal/softkey"
)

var (
	_ hsm.KeyManager = (*Manager)(nil)
	_ hsm.Deleter    = (*Manager)(nil)
)

// fileVersion is the version of the file format this package reads and
// writes.
const fileVersion = 1

// file is the JSON form of the keys file.
type file struct {
	Version int                `json:"version"`
	Keys    map[string]fileKey `json:"keys"`
}

type fileKey struct {
	Type  hsm.KeyType `json:"type"`
	PKCS8 []byte      `json:"pkcs8"`
}

// Manager holds keys in a file. It implements hsm.KeyManager and hsm.Deleter
// and is safe for concurrent use; reads and Sign take no lock.
type Manager struct {
	path string

	writeMu sync.Mutex                       // serializes changes to the file
	keys    atomic.Pointer[map[string]entry] // what the file holds; replaced, never modified

	failWrite func(step string) error // tests only: fails a write before a step
}

type entry struct {
	key *softkey.Key
	der []byte // PKCS #8
}

// New returns a Manager over the keys file at path, loading the keys it
// holds. If the file does not exist, the Manager holds no keys and creates
// the file when a key is first generated; its directory is created now, with
// mode 0700. A file that cannot be read or parsed is an error, never
// replaced.
func New(path string) (*Manager, error) {
	if path == "" {
		return nil, errors.New("disk: keys file path is empty")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("disk: could not create the directory of the keys file: %w", err)
	}
	keys, err := load(path)
	if err != nil {
		return nil, err
	}
	m := &Manager{path: path}
	m.keys.Store(&keys)
	return m, nil
}

// GenerateKey creates a key of type t under id and writes it to the file,
// replacing any key that had the id. The key is on disk when GenerateKey
// returns it. Keys returned earlier under the id go on signing with the old
// key.
func (m *Manager) GenerateKey(ctx context.Context, id string, t hsm.KeyType) (hsm.Key, error) {
	if id == "" {
		return nil, errors.New("disk: key id is empty")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("disk: could not generate key %q: %w", id, err)
	}
	k, err := softkey.Generate(id, t)
	if err != nil {
		return nil, fmt.Errorf("disk: could not generate key %q: %w", id, err)
	}
	der, err := k.MarshalPKCS8()
	if err != nil {
		return nil, fmt.Errorf("disk: could not encode key %q: %w", id, err)
	}
	err = m.change(ctx, func(keys map[string]entry) {
		keys[id] = entry{key: k, der: der}
	})
	if err != nil {
		return nil, fmt.Errorf("disk: could not store key %q: %w", id, err)
	}
	return k, nil
}

// GetKey returns the key with the id, or an error wrapping hsm.ErrNotFound.
func (m *Manager) GetKey(ctx context.Context, id string) (hsm.Key, error) {
	e, ok := (*m.keys.Load())[id]
	if !ok {
		return nil, fmt.Errorf("disk: key %q: %w", id, hsm.ErrNotFound)
	}
	return e.key, nil
}

// ListKeys returns every key, sorted by ID.
func (m *Manager) ListKeys(ctx context.Context) ([]hsm.Key, error) {
	keys := *m.keys.Load()
	list := make([]hsm.Key, 0, len(keys))
	for _, id := range slices.Sorted(maps.Keys(keys)) {
		list = append(list, keys[id].key)
	}
	return list, nil
}

// DeleteKey deletes the key with the id from the file, or returns an error
// wrapping hsm.ErrNotFound if there is none. Keys returned earlier under the
// id go on signing.
func (m *Manager) DeleteKey(ctx context.Context, id string) error {
	if _, ok := (*m.keys.Load())[id]; !ok {
		return fmt.Errorf("disk: key %q: %w", id, hsm.ErrNotFound)
	}
	var found bool
	err := m.change(ctx, func(keys map[string]entry) {
		_, found = keys[id]
		delete(keys, id)
	})
	if err != nil {
		return fmt.Errorf("disk: could not delete key %q: %w", id, err)
	}
	if !found { // deleted by another call since the check above
		return fmt.Errorf("disk: key %q: %w", id, hsm.ErrNotFound)
	}
	return nil
}

// change applies edit to a copy of the keys, writes the copy to the file and,
// once the file is renamed into place, makes the copy current. If the write
// fails before the rename, the file and the keys are as they were.
func (m *Manager) change(ctx context.Context, edit func(map[string]entry)) error {
	m.writeMu.Lock()
	defer m.writeMu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	keys := maps.Clone(*m.keys.Load())
	edit(keys)

	f := file{Version: fileVersion, Keys: make(map[string]fileKey, len(keys))}
	for id, e := range keys {
		f.Keys[id] = fileKey{Type: e.key.Type(), PKCS8: e.der}
	}
	data, err := json.MarshalIndent(f, "", "\t")
	if err != nil {
		return err
	}
	if err := m.writeFile(append(data, '\n')); err != nil {
		return fmt.Errorf("could not write keys file: %w", err)
	}
	// The new file is in place: the keys in memory must say what it says,
	// even if syncing its directory fails below.
	m.keys.Store(&keys)
	if err := syncDir(filepath.Dir(m.path)); err != nil {
		return fmt.Errorf("keys file written, but its directory could not be synced: %w", err)
	}
	return nil
}

// writeFile writes data to a temporary file in the directory of the keys
// file, syncs it and renames it over the keys file. On error the keys file
// is untouched and the temporary file removed.
func (m *Manager) writeFile(data []byte) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(m.path), "."+filepath.Base(m.path)+".*.tmp")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := m.fail("write"); err != nil {
		return err
	}
	if err := tmp.Chmod(0o600); err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		return err
	}
	if err := m.fail("sync"); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := m.fail("rename"); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), m.path)
}

func (m *Manager) fail(step string) error {
	if m.failWrite == nil {
		return nil
	}
	return m.failWrite(step)
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// load reads the keys file at path. A missing file holds no keys.
func load(path string) (map[string]entry, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return make(map[string]entry), nil
	}
	if err != nil {
		return nil, fmt.Errorf("disk: could not read keys file: %w; it must be a regular file the server can read", err)
	}
	var head struct{ Version int }
	if json.Unmarshal(data, &head) == nil && head.Version > fileVersion {
		return nil, fmt.Errorf("disk: keys file %s has version %d, but this Plinth reads only version %d; run the newer Plinth that wrote it", path, head.Version, fileVersion)
	}
	keys, err := parse(data)
	if err != nil {
		return nil, fmt.Errorf("disk: keys file %s is corrupt: %w; restore it from a backup, or move it aside to start with new keys", path, err)
	}
	return keys, nil
}

// parse parses and checks the keys file's contents: strict JSON, the
// version, and every key's PKCS #8 encoding against its type.
func parse(data []byte) (map[string]entry, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, errors.New("it is empty")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f file
	if err := dec.Decode(&f); err != nil {
		var (
			syntax *json.SyntaxError
			shape  *json.UnmarshalTypeError
		)
		switch {
		case errors.Is(err, io.ErrUnexpectedEOF):
			return nil, errors.New("its JSON ends too early")
		case errors.As(err, &syntax):
			return nil, fmt.Errorf("its JSON has a syntax error at byte %d", syntax.Offset)
		case errors.As(err, &shape) && shape.Field == "":
			return nil, fmt.Errorf("its JSON is %s, not an object", article(shape.Value))
		case errors.As(err, &shape):
			return nil, fmt.Errorf("its JSON has %s at %q", article(shape.Value), shape.Field)
		}
		return nil, fmt.Errorf("its JSON is not a keys file: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("it has data after its JSON object")
	}
	if f.Version != fileVersion {
		return nil, fmt.Errorf("its version is %d, want %d", f.Version, fileVersion)
	}
	keys := make(map[string]entry, len(f.Keys))
	for _, id := range slices.Sorted(maps.Keys(f.Keys)) {
		if id == "" {
			return nil, errors.New("a key has an empty id")
		}
		fk := f.Keys[id]
		k, err := softkey.ParsePKCS8(id, fk.Type, fk.PKCS8)
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", id, err)
		}
		keys[id] = entry{key: k, der: fk.PKCS8}
	}
	return keys, nil
}

// article prefixes a JSON value kind ("array", "number") with "a" or "an".
func article(kind string) string {
	if kind != "" && strings.ContainsRune("aeiou", rune(kind[0])) {
		return "an " + kind
	}
	return "a " + kind
}

// Provenance says the key is a PKCS#8 key in the keys file: anyone who can
// read the file holds it.
func (m *Manager) Provenance(ctx context.Context, id string) (*hsm.Provenance, error) {
	if _, err := m.GetKey(ctx, id); err != nil {
		return nil, err
	}
	return &hsm.Provenance{Backend: "disk", Location: "file:" + m.path + "#" + id, Attributes: map[string]string{"format": "PKCS#8", "file_mode": "0600"}}, nil
}
