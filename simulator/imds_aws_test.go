package simulator_test

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/smallstep/pkcs7"

	"github.com/plinth-id/plinth/simulator"
)

func TestAWSIMDS(t *testing.T) {
	pending := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	m, err := simulator.NewAWSIMDS(simulator.AWSIdentityDocument{Region: "eu-west-1", PendingTime: pending})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)

	do := func(method, path string, h map[string]string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, m.URL()+path, nil)
		for k, v := range h {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	// IMDSv1-style reads are refused.
	if code, _ := do("GET", "/latest/dynamic/instance-identity/document", nil); code != 401 {
		t.Errorf("read without token: HTTP %d, want 401", code)
	}
	if code, _ := do("GET", "/latest/dynamic/instance-identity/document", map[string]string{"X-aws-ec2-metadata-token": "forged"}); code != 401 {
		t.Errorf("read with a forged token: HTTP %d, want 401", code)
	}
	if code, _ := do("PUT", "/latest/api/token", nil); code != 400 {
		t.Errorf("token without TTL: HTTP %d, want 400", code)
	}
	code, tok := do("PUT", "/latest/api/token", map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": "60"})
	if code != 200 || tok == "" {
		t.Fatalf("token: HTTP %d %q", code, tok)
	}
	h := map[string]string{"X-aws-ec2-metadata-token": tok}
	_, doc := do("GET", "/latest/dynamic/instance-identity/document", h)
	_, sig := do("GET", "/latest/dynamic/instance-identity/rsa2048", h)

	if doc != string(m.Document()) || sig != m.RSA2048() {
		t.Error("served document or signature differs from Document()/RSA2048()")
	}
	var d map[string]any
	if err := json.Unmarshal([]byte(doc), &d); err != nil {
		t.Fatal(err)
	}
	if d["region"] != "eu-west-1" || d["availabilityZone"] != "eu-west-1a" || d["pendingTime"] != "2026-03-01T12:00:00Z" || d["kernelId"] != nil {
		t.Errorf("document = %s", doc)
	}
	if !strings.Contains(doc, `"accountId" : "123456789012",`) {
		t.Errorf("document is not in IMDS's format:\n%s", doc)
	}

	// The signature is IMDS-shaped: base64 in 64-column lines, attached
	// content, no embedded certificates, and it verifies with CertPEM.
	for _, line := range strings.Split(sig, "\n") {
		if len(line) > 64 {
			t.Fatalf("signature line of %d characters", len(line))
		}
	}
	der, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(sig, "\n", ""))
	if err != nil {
		t.Fatal(err)
	}
	p7, err := pkcs7.Parse(der)
	if err != nil {
		t.Fatal(err)
	}
	if len(p7.Certificates) != 0 {
		t.Errorf("signature embeds %d certificates, want 0", len(p7.Certificates))
	}
	if !bytes.Equal(p7.Content, []byte(doc)) {
		t.Error("signed content is not the document")
	}
	block, _ := pem.Decode(m.CertPEM())
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	p7.Certificates = []*x509.Certificate{cert}
	if err := p7.Verify(); err != nil {
		t.Fatalf("signature does not verify with CertPEM: %v", err)
	}

	m.Fail(2)
	for range 2 {
		if code, _ := do("PUT", "/latest/api/token", map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": "60"}); code != 500 {
			t.Errorf("Fail: HTTP %d, want 500", code)
		}
	}
	if code, _ := do("GET", "/latest/dynamic/instance-identity/document", h); code != 200 {
		t.Errorf("after Fail(2) ran out: HTTP %d", code)
	}
	m.Garbage()
	if _, body := do("GET", "/latest/dynamic/instance-identity/document", h); body == doc || json.Valid([]byte(body)) {
		t.Errorf("Garbage: served %q", body)
	}
	if n := m.Requests(); n != 10 {
		t.Errorf("Requests() = %d, want 10", n)
	}
}
