package disk_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/plinth-id/plinth/hsm"
	"github.com/plinth-id/plinth/hsm/disk"
	"github.com/plinth-id/plinth/hsm/hsmtest"
)

func TestContract(t *testing.T) {
	root := t.TempDir()
	// open and reopen find the same file from the test's name.
	path := func(t *testing.T) string {
		return filepath.Join(root, url.PathEscape(t.Name()), "keys.json")
	}
	open := func(t *testing.T) hsm.KeyManager {
		if _, err := os.Stat(path(t)); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("open called twice for %s", t.Name())
		}
		return newManager(t, path(t))
	}
	reopen := func(t *testing.T) hsm.KeyManager {
		return newManager(t, path(t))
	}
	hsmtest.Run(t, open, reopen)
}

func BenchmarkSignDisk(b *testing.B) {
	m, err := disk.New(filepath.Join(b.TempDir(), "keys.json"))
	if err != nil {
		b.Fatal(err)
	}
	hsmtest.BenchmarkSign(b, m)
}

func TestFileAndDirectoryModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	path := filepath.Join(dir, "keys.json")
	m := newManager(t, path)
	for _, d := range []string{filepath.Dir(dir), dir} {
		assertMode(t, d, fs.ModeDir|0o700)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("New created the keys file before any key was generated (stat: %v)", err)
	}
	if _, err := m.GenerateKey(t.Context(), "x509-ca-A", hsm.ECP256); err != nil {
		t.Fatal(err)
	}
	assertMode(t, path, 0o600)

	// A file someone loosened is tightened by the next write.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := m.GenerateKey(t.Context(), "x509-ca-B", hsm.ECP256); err != nil {
		t.Fatal(err)
	}
	assertMode(t, path, 0o600)
	assertNoTempFiles(t, dir)
}

func TestReopen(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "keys.json")
	m := newManager(t, path)
	a, err := m.GenerateKey(ctx, "x509-ca-A", hsm.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"jwt-A", "gone"} {
		if _, err := m.GenerateKey(ctx, id, hsm.ECP384); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.DeleteKey(ctx, "gone"); err != nil {
		t.Fatal(err)
	}

	again := newManager(t, path)
	k, err := again.GetKey(ctx, "x509-ca-A")
	if err != nil {
		t.Fatalf("GetKey after reopen: %v", err)
	}
	if k.Type() != hsm.ECP256 || !k.Public().(*ecdsa.PublicKey).Equal(a.Public()) {
		t.Errorf("GetKey after reopen: got a %s key with another public key", k.Type())
	}
	if _, err := again.GetKey(ctx, "gone"); !errors.Is(err, hsm.ErrNotFound) {
		t.Errorf("GetKey of a deleted key after reopen: got error %v, want hsm.ErrNotFound", err)
	}
	assertIDs(t, again, "jwt-A", "x509-ca-A")
}

// TestFileFormat pins the file format: a file written by hand is read, and
// a file written by the Manager has the same shape.
func TestFileFormat(t *testing.T) {
	ctx := t.Context()
	priv, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "keys.json")
	handWritten := fmt.Sprintf(`{"version": 1, "keys": {"jwt-A": {"type": "ec-p384", "pkcs8": %q}}}`,
		base64.StdEncoding.EncodeToString(der))
	writeFile(t, path, handWritten)

	m := newManager(t, path)
	k, err := m.GetKey(ctx, "jwt-A")
	if err != nil {
		t.Fatalf("GetKey from a hand-written file: %v", err)
	}
	if k.Type() != hsm.ECP384 || !priv.PublicKey.Equal(k.Public()) {
		t.Fatalf("GetKey from a hand-written file: got a %s key with another public key", k.Type())
	}

	if _, err := m.GenerateKey(ctx, "x509-ca-A", hsm.ECP256); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Version int
		Keys    map[string]struct {
			Type  string
			PKCS8 []byte
		}
	}
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatalf("keys file is not JSON: %v", err)
	}
	if f.Version != 1 || len(f.Keys) != 2 || f.Keys["jwt-A"].Type != "ec-p384" || f.Keys["x509-ca-A"].Type != "ec-p256" {
		t.Fatalf("keys file has an unexpected shape:\n%s", data)
	}
	if !bytes.Equal(f.Keys["jwt-A"].PKCS8, der) {
		t.Error("keys file: the PKCS #8 encoding of jwt-A changed when another key was added")
	}
	k, err = m.GetKey(ctx, "x509-ca-A")
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(f.Keys["x509-ca-A"].PKCS8)
	if err != nil {
		t.Fatalf("keys file: x509-ca-A: %v", err)
	}
	if !parsed.(crypto.Signer).Public().(*ecdsa.PublicKey).Equal(k.Public()) {
		t.Error("keys file: x509-ca-A holds another key than GetKey returns")
	}
}

func TestCorruptFile(t *testing.T) {
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	// A well-formed PKCS #8 structure for an algorithm no one knows.
	unknownAlgorithm, err := asn1.Marshal(struct {
		Version    int
		Algorithm  pkix.AlgorithmIdentifier
		PrivateKey []byte
	}{Algorithm: pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}}, PrivateKey: []byte{1}})
	if err != nil {
		t.Fatal(err)
	}
	// keyFile returns a keys file holding one key, x509-ca-A: priv, or DER.
	keyFile := func(typ string, priv any) string {
		der, ok := priv.([]byte)
		if !ok {
			if der, err = x509.MarshalPKCS8PrivateKey(priv); err != nil {
				t.Fatal(err)
			}
		}
		return fmt.Sprintf(`{"version":1,"keys":{"x509-ca-A":{"type":%q,"pkcs8":%q}}}`, typ, base64.StdEncoding.EncodeToString(der))
	}
	const (
		corrupt = "disk: keys file %s is corrupt: "
		advice  = "; restore it from a backup, or move it aside to start with new keys"
	)
	tests := []struct {
		name, contents, want string
	}{
		{"empty", "", corrupt + "it is empty" + advice},
		{"blank", " \n\t\n", corrupt + "it is empty" + advice},
		{"truncated", `{"version":1,"keys":{"x509-ca-A":{"type":"ec-p`, corrupt + "its JSON ends too early" + advice},
		{"syntax", `{"version":1,}`, corrupt + "its JSON has a syntax error at byte 14" + advice},
		{"not JSON", "-----BEGIN PRIVATE KEY-----\n", corrupt + "its JSON has a syntax error at byte 2" + advice},
		{"array", `[]`, corrupt + "its JSON is an array, not an object" + advice},
		{"wrong field type", `{"version":"1","keys":{}}`, corrupt + `its JSON has a string at "version"` + advice},
		{"unknown field", `{"version":1,"keys":{},"owner":"me"}`, corrupt + `its JSON is not a keys file: json: unknown field "owner"` + advice},
		{"trailing data", `{"version":1,"keys":{}} {}`, corrupt + "it has data after its JSON object" + advice},
		{"no version", `{"keys":{}}`, corrupt + "its version is 0, want 1" + advice},
		{"empty id", `{"version":1,"keys":{"":{"type":"ec-p256","pkcs8":""}}}`, corrupt + "a key has an empty id" + advice},
		{"unknown type", keyFile("ec-p521", p256), corrupt + `key "x509-ca-A": hsm: unknown key type "ec-p521" (want ec-p256, ec-p384, rsa-2048 or rsa-4096)` + advice},
		{"not base64", `{"version":1,"keys":{"x509-ca-A":{"type":"ec-p256","pkcs8":"!!"}}}`, corrupt + "its JSON is not a keys file: illegal base64 data at input byte 0" + advice},
		{"unknown algorithm", keyFile("ec-p256", unknownAlgorithm), corrupt + `key "x509-ca-A": PKCS #8 key: x509: PKCS#8 wrapping contained private key with unknown algorithm: 1.3.6.1.4.1.99999.1` + advice},
		{"curve mismatch", keyFile("ec-p384", p256), corrupt + `key "x509-ca-A": type ec-p384 does not match its PKCS #8 key (ec-p256)` + advice},
		{"size mismatch", keyFile("rsa-2048", rsa1024), corrupt + `key "x509-ca-A": type rsa-2048 does not match its PKCS #8 key (rsa-1024)` + advice},
		{"algorithm mismatch", keyFile("ec-p256", ed), corrupt + `key "x509-ca-A": type ec-p256 does not match its PKCS #8 key (ed25519.PublicKey)` + advice},
		{"newer version", `{"version":2,"keys":{},"labels":{}}`, "disk: keys file %s has version 2, but this Plinth reads only version 1; run the newer Plinth that wrote it"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "keys.json")
			writeFile(t, path, tt.contents)
			_, err := disk.New(path)
			if want := fmt.Sprintf(tt.want, path); err == nil || err.Error() != want {
				t.Errorf("New: got error\n\t%v\nwant\n\t%s", err, want)
			}
			if data, err := os.ReadFile(path); err != nil || string(data) != tt.contents {
				t.Errorf("New changed the file it could not load (%v)", err)
			}
		})
	}
}

func TestUnreadableFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.json")
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := disk.New(path)
	want := "disk: could not read keys file: read " + path + ": is a directory; it must be a regular file the server can read"
	if err == nil || err.Error() != want {
		t.Errorf("New: got error\n\t%v\nwant\n\t%s", err, want)
	}

	if os.Geteuid() != 0 { // root reads any file
		path := filepath.Join(t.TempDir(), "keys.json")
		writeFile(t, path, "{}")
		if err := os.Chmod(path, 0); err != nil {
			t.Fatal(err)
		}
		_, err := disk.New(path)
		want := "disk: could not read keys file: open " + path + ": permission denied; it must be a regular file the server can read"
		if err == nil || err.Error() != want {
			t.Errorf("New: got error\n\t%v\nwant\n\t%s", err, want)
		}
	}

	if _, err := disk.New(""); err == nil || err.Error() != "disk: keys file path is empty" {
		t.Errorf("New(\"\"): got error %v", err)
	}
}

// TestReadOnlyDirectory checks that a write that fails (the directory is
// read-only) leaves the previous file and keys as they were. Root ignores
// directory permissions; disk_internal_test.go covers the same ground
// whoever runs it.
func TestReadOnlyDirectory(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root can write to a read-only directory")
	}
	ctx := t.Context()
	dir := t.TempDir()
	path := filepath.Join(dir, "keys.json")
	m := newManager(t, path)
	a, err := m.GenerateKey(ctx, "x509-ca-A", hsm.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(dir, 0o700) })

	_, err = m.GenerateKey(ctx, "x509-ca-A", hsm.ECP256)
	// The temporary file's name is random: .keys.json.<digits>.tmp.
	wantPrefix := `disk: could not store key "x509-ca-A": could not write keys file: open ` + dir + `/.keys.json.`
	const wantSuffix = ".tmp: permission denied"
	if err == nil || !strings.HasPrefix(err.Error(), wantPrefix) || !strings.HasSuffix(err.Error(), wantSuffix) {
		t.Errorf("GenerateKey in a read-only directory: got error\n\t%v\nwant\n\t%s<digits>%s", err, wantPrefix, wantSuffix)
	}
	if err := m.DeleteKey(ctx, "x509-ca-A"); err == nil {
		t.Error("DeleteKey in a read-only directory: no error")
	}
	if after, err := os.ReadFile(path); err != nil || !bytes.Equal(after, before) {
		t.Errorf("a failed write changed the keys file (%v)", err)
	}
	k, err := m.GetKey(ctx, "x509-ca-A")
	if err != nil || !k.Public().(*ecdsa.PublicKey).Equal(a.Public()) {
		t.Errorf("a failed write changed the key in memory (%v)", err)
	}
	k, err = newManager(t, path).GetKey(ctx, "x509-ca-A")
	if err != nil || !k.Public().(*ecdsa.PublicKey).Equal(a.Public()) {
		t.Errorf("a failed write changed the key on disk (%v)", err)
	}
}

func newManager(t *testing.T, path string) *disk.Manager {
	t.Helper()
	m, err := disk.New(path)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func writeFile(t *testing.T, path, contents string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(contents), 0o600); err != nil {
		t.Fatal(err)
	}
}

func assertMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode(); got != want {
		t.Errorf("%s has mode %v, want %v", path, got, want)
	}
}

func assertNoTempFiles(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".tmp") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}

func assertIDs(t *testing.T, m hsm.KeyManager, want ...string) {
	t.Helper()
	keys, err := m.ListKeys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, k := range keys {
		got = append(got, k.ID())
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("ListKeys: got IDs %q, want %q", got, want)
	}
}
