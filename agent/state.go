package agent

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/plinth-id/plinth/hsm"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// stateFile holds the agent SVID between runs; its key stays in the key
// manager, named by KeyID.
const (
	stateFile  = "agent-svid.json"
	bundleFile = "bundle.der"
)

type state struct {
	KeyID        string   `json:"key_id"`
	Chain        [][]byte `json:"chain"`
	Reattestable bool     `json:"reattestable"`

	key    hsm.Key
	chain  []*x509.Certificate
	bundle []*x509.Certificate
}

func (s *state) leaf() *x509.Certificate { return s.chain[0] }

func (s *state) id() spiffeid.ID {
	id, _ := x509svid.IDFromCert(s.leaf())
	return id
}

// loadState returns the saved agent SVID, or nil when there is none, it has
// expired, or its key is gone (the agent must attest). A file that exists
// but cannot be understood is an error: the operator decides what to do.
func loadState(ctx context.Context, dir string, keys hsm.KeyManager) (*state, error) {
	path := filepath.Join(dir, stateFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("agent: could not read %s: %w", path, err)
	}
	corrupt := func(why string, err error) error {
		return fmt.Errorf("agent: agent data %s is corrupt (%s: %v); move it aside to attest again (a join-token agent needs a new token)", path, why, err)
	}
	var st state
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, corrupt("not valid JSON", err)
	}
	if st.KeyID == "" || len(st.Chain) == 0 {
		return nil, corrupt("missing key or certificate", errors.New("incomplete record"))
	}
	for _, der := range st.Chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, corrupt("bad certificate", err)
		}
		st.chain = append(st.chain, c)
	}
	if _, err := x509svid.IDFromCert(st.leaf()); err != nil {
		return nil, corrupt("certificate is not an X509-SVID", err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, bundleFile)); err == nil {
		if st.bundle, err = x509.ParseCertificates(b); err != nil {
			return nil, corrupt("bad bundle "+bundleFile, err)
		}
	}
	st.key, err = keys.GetKey(ctx, st.KeyID)
	if errors.Is(err, hsm.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("agent: could not load agent key %q: %w", st.KeyID, err)
	}
	if pub, ok := st.key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(st.leaf().PublicKey) {
		return nil, corrupt("agent key does not match the saved SVID", errors.New("key mismatch"))
	}
	if !time.Now().Before(st.leaf().NotAfter) {
		return nil, nil
	}
	return &st, nil
}

func saveState(dir string, st *state) error {
	st.Chain = nil
	for _, c := range st.chain {
		st.Chain = append(st.Chain, c.Raw)
	}
	data, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("agent: could not encode agent data: %w", err)
	}
	return writeAtomic(filepath.Join(dir, stateFile), data)
}

func saveBundle(dir string, certs []*x509.Certificate) error {
	var data []byte
	for _, c := range certs {
		data = append(data, c.Raw...)
	}
	return writeAtomic(filepath.Join(dir, bundleFile), data)
}

func removeState(dir string) {
	os.Remove(filepath.Join(dir, stateFile))
}

// writeAtomic replaces path with data so a crash leaves the old or the new
// content, never a mix.
func writeAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("agent: could not create data dir: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return fmt.Errorf("agent: could not write %s: %w", path, err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("agent: could not write %s: %w", path, err)
	}
	return nil
}
