package gcpiit_test

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

var update = flag.Bool("update", false, "regenerate testdata/token.jwt and testdata/jwks.json")

// capturedAt is when testdata/token.jwt was issued.
var capturedAt = time.Date(2026, 11, 2, 14, 3, 27, 0, time.UTC)

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// writeCaptured writes a token shaped exactly as GCE's (claims in Google's
// order, license_id, numbers as numbers), signed by a new test key, and that
// key as Google publishes its own.
func writeCaptured(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	id := make([]byte, 20)
	rand.Read(id)
	kid := hex.EncodeToString(id)
	created := time.Date(2026, 6, 17, 9, 21, 44, 0, time.UTC)
	claims := fmt.Sprintf(`{"aud":"spire-gcp-node-attestor","azp":"102345678901234567890",`+
		`"email":"987654321098-compute@developer.gserviceaccount.com","email_verified":true,"exp":%d,`+
		`"google":{"compute_engine":{"instance_creation_timestamp":%d,"instance_id":"8117354231958370115",`+
		`"instance_name":"spire-agent-0","license_id":["5926592092274602096"],"project_id":"acme-prod-4f2c",`+
		`"project_number":987654321098,"zone":"us-central1-a"}},"iat":%d,"iss":"https://accounts.google.com",`+
		`"sub":"102345678901234567890"}`, capturedAt.Add(time.Hour).Unix(), created.Unix(), capturedAt.Unix())
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: key, KeyID: kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	jws, err := signer.Sign([]byte(claims))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := jose.JSONWebKey{Key: key.Public(), KeyID: kid, Algorithm: "RS256", Use: "sig"}.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	set, err := json.MarshalIndent(map[string]any{"keys": []json.RawMessage{pub}}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll("testdata", 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"token.jwt": []byte(tok + "\n"), "jwks.json": append(set, '\n')} {
		if err := os.WriteFile(filepath.Join("testdata", name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
