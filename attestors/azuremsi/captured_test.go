package azuremsi_test

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"flag"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/plinth-id/plinth/attestors/azuremsi"
)

var update = flag.Bool("update", false, "regenerate testdata/token.jwt and testdata/keys.json")

const (
	capturedTenant    = "3c5f7a9b-1d2e-4f60-8a9b-0c1d2e3f4a5b"
	capturedPrincipal = "9e8d7c6b-5a49-4382-b716-a5f4e3d2c1b0"
)

// capturedAt is when testdata/token.jwt was issued.
var capturedAt = time.Date(2026, 11, 2, 14, 3, 27, 0, time.UTC)

// A token as IMDS hands it out (Microsoft's header and claim order, v1
// claims, xms_mirid of a system-assigned identity), signed by a test key
// published as Microsoft publishes its own (x5c, x5t, issuer). Regenerate
// with `go test -run TestCapturedToken -update`.
func TestCapturedToken(t *testing.T) {
	if *update {
		writeCaptured(t)
	}
	b, err := os.ReadFile("testdata/keys.json")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := azuremsi.ParseJWKS(b)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := os.ReadFile("testdata/token.jwt")
	if err != nil {
		t.Fatal(err)
	}
	s, err := azuremsi.NewServer(azuremsi.ServerConfig{
		TrustDomain: td, Tenants: map[string]azuremsi.TenantConfig{capturedTenant: {Keys: keys}},
		AllowReattestation: true, Logger: quiet,
		Clock: func() time.Time { return capturedAt.Add(time.Minute) },
	})
	if err != nil {
		t.Fatal(err)
	}
	p := fmt.Appendf(nil, `{"token":%q}`, strings.TrimSpace(string(tok)))
	res, err := s.Attest(t.Context(), p, noChallenge)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := res.AgentID.String(), "spiffe://example.org/spire/agent/azure_msi/"+capturedTenant+"/"+capturedPrincipal; got != want {
		t.Errorf("agent ID = %s, want %s", got, want)
	}
	want := []string{
		"azure_msi:principal-id:" + capturedPrincipal,
		"azure_msi:resource-group:spire-agents",
		"azure_msi:subscription-id:2a4c6e80-1b3d-4f5a-9c7e-8d0f1a2b3c4d",
		"azure_msi:tenant-id:" + capturedTenant,
		"azure_msi:virtual-machine:agent-vm-01",
		"azure_msi:vm-name:spire-agents:agent-vm-01",
	}
	if got := selectors(res); !slices.Equal(got, want) {
		t.Errorf("selectors = %q\nwant %q", got, want)
	}
}

func writeCaptured(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "accounts.accesscontrol.windows.net"},
		NotBefore:    capturedAt.AddDate(0, -2, 0),
		NotAfter:     capturedAt.AddDate(5, 0, 0),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha1.Sum(der)
	x5t := base64.RawURLEncoding.EncodeToString(sum[:])
	enc := base64.RawURLEncoding.EncodeToString
	header := fmt.Sprintf(`{"typ":"JWT","alg":"RS256","x5t":%q,"kid":%q}`, x5t, x5t)
	iss := "https://sts.windows.net/" + capturedTenant + "/"
	claims := fmt.Sprintf(`{"aud":"https://management.azure.com/","iss":%q,"iat":%d,"nbf":%d,"exp":%d,`+
		`"aio":"k2BgYPjX3/6tZbXN5+7j0tf5a8AXAA==","appid":"4b6d8f0a-2c4e-4a6b-8d0f-1a3c5e7f9b2d","appidacr":"2",`+
		`"idp":%q,"idtyp":"app","oid":%q,"rh":"0.ARoAm3pfPB4dYE-KmwwdLj9KW0ZIf3kAutdPukPawfj2MBMaAAA.",`+
		`"sub":%q,"tid":%q,"uti":"xJ4ZC2bHPUSQd-4Ow2g5AA","ver":"1.0",`+
		`"xms_mirid":"/subscriptions/2a4c6e80-1b3d-4f5a-9c7e-8d0f1a2b3c4d/resourcegroups/spire-agents/providers/Microsoft.Compute/virtualMachines/agent-vm-01",`+
		`"xms_tcdt":1600275392}`,
		iss, capturedAt.Unix(), capturedAt.Unix(), capturedAt.Add(24*time.Hour+5*time.Minute).Unix(),
		iss, capturedPrincipal, capturedPrincipal, capturedTenant)
	input := enc([]byte(header)) + "." + enc([]byte(claims))
	digest := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	tok := input + "." + enc(sig)
	keys := fmt.Sprintf(`{"keys":[{"kty":"RSA","use":"sig","kid":%q,"x5t":%q,"n":%q,"e":"AQAB","x5c":[%q],"issuer":%q}]}`,
		x5t, x5t, enc(key.N.Bytes()), base64.StdEncoding.EncodeToString(der),
		"https://login.microsoftonline.com/"+capturedTenant+"/v2.0")
	if err := os.MkdirAll("testdata", 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string]string{"token.jwt": tok + "\n", "keys.json": keys + "\n"} {
		if err := os.WriteFile(filepath.Join("testdata", name), []byte(b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
