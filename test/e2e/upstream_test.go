package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/plinth-id/plinth/hsm"
	"github.com/plinth-id/plinth/hsm/pkcs11"
	"github.com/plinth-id/plinth/simulator"
	"github.com/plinth-id/plinth/test/harness"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// With UpstreamAuthority "disk", the trust bundle is the corporate root and
// workloads' SVIDs chain to it through the server's CA.
func TestUpstreamAuthorityDisk(t *testing.T) {
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Corp Root CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	certPath, keyPath := filepath.Join(dir, "root.crt"), filepath.Join(dir, "root.key")
	os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)

	s := harness.NewServerWithPlugins(t, bin.dir, "", `    UpstreamAuthority "disk" {
        plugin_data {
            cert_file_path = "`+certPath+`"
            key_file_path = "`+keyPath+`"
        }
    }
`)
	s.StartReady(t)
	bundle := parsePEM(t, s.BundlePEM(t))
	root, _ := x509.ParseCertificate(der)
	if len(bundle) != 1 || !bundle[0].Equal(root) {
		t.Fatalf("the bundle is not the corporate root: %d certificates", len(bundle))
	}
	a := s.StartAgent(t, 5*time.Second)
	s.CreateEntry(t, testID, selfSelectors(t)...)
	a.WaitSVIDs(t, testID)
	x, err := workloadapi.FetchX509Context(t.Context(), a.Addr())
	if err != nil {
		t.Fatal(err)
	}
	svid := x.DefaultSVID()
	if len(svid.Certificates) != 2 {
		t.Fatalf("the SVID chain has %d certificates, want the SVID and the server's CA", len(svid.Certificates))
	}
	if err := svid.Certificates[1].CheckSignatureFrom(root); err != nil {
		t.Fatalf("the server's CA is not signed by the corporate root: %v", err)
	}
}

// With UpstreamAuthority "pkcs11", the corporate CA's key stays in its
// token and signs the server's CA.
func TestUpstreamAuthorityPKCS11(t *testing.T) {
	dir, err := os.MkdirTemp("", "up11")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	token, err := simulator.StartSoftHSM(dir, "corp", "5678")
	if err != nil {
		t.Fatal(err)
	}
	// SoftHSM reads its configuration once per process: this is the only
	// test of this binary that uses PKCS#11 itself.
	t.Setenv("SOFTHSM2_CONF", token.Config)
	m, err := pkcs11.New(pkcs11.Config{Module: token.Module, TokenLabel: token.TokenLabel, PIN: token.PIN})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	key, err := m.GenerateKey(t.Context(), "corp-root", hsm.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "Corp HSM Root CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	certPath, pinPath := filepath.Join(dir, "corp.crt"), filepath.Join(dir, "pin")
	os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(pinPath, []byte(token.PIN), 0o600)

	s := harness.NewServerWithPlugins(t, bin.dir, "", `    UpstreamAuthority "pkcs11" {
        plugin_data {
            module_path = "`+token.Module+`"
            token_label = "corp"
            pin_file = "`+pinPath+`"
            key_label = "corp-root"
            cert_file_path = "`+certPath+`"
        }
    }
`)
	s.StartReady(t)
	root, _ := x509.ParseCertificate(der)
	if bundle := parsePEM(t, s.BundlePEM(t)); len(bundle) != 1 || !bundle[0].Equal(root) {
		t.Fatal("the bundle is not the HSM-held corporate root")
	}
	a := s.StartAgent(t, 5*time.Second)
	s.CreateEntry(t, testID, selfSelectors(t)...)
	a.WaitSVIDs(t, testID)
}
