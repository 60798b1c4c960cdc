package simulator

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/smallstep/pkcs7"
)

// AWSIdentityDocument is the instance an AWSIMDS pretends to be. Empty fields
// get test defaults.
type AWSIdentityDocument struct {
	AccountID        string    // default 123456789012
	Architecture     string    // default x86_64
	AvailabilityZone string    // default <Region>a
	ImageID          string    // default ami-0123456789abcdef0
	InstanceID       string    // default i-0123456789abcdef0
	InstanceType     string    // default t3.micro
	PendingTime      time.Time // default now, to the second
	PrivateIP        string    // default 10.0.0.10
	Region           string    // default us-east-1
}

// AWSIMDS is a fake EC2 instance metadata service speaking IMDSv2: a session
// token from PUT /latest/api/token is required for every read, and it serves
// the instance identity document and its RSA-2048 PKCS#7 signature, made with
// a test key and self-signed certificate it generates.
//
// DEV/TEST ONLY. A server trusts its documents only when CertPEM is added to
// the aws_iid certificates by explicit configuration; never do that in
// production.
type AWSIMDS struct {
	srv     *httptest.Server
	doc     []byte
	rsa2048 string
	certPEM []byte
	key     *rsa.PrivateKey
	cert    *x509.Certificate

	mu       sync.Mutex
	tokens   map[string]time.Time
	fail     int
	garbage  bool
	requests int
}

// NewAWSIMDS starts a fake IMDS for doc on a local port. Close it when done.
func NewAWSIMDS(doc AWSIdentityDocument) (*AWSIMDS, error) {
	fillAWSDefaults(&doc)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 63))
	if err != nil {
		return nil, err
	}
	name := pkix.Name{Organization: []string{"Plinth test"}, CommonName: "Plinth simulated AWS IMDS (TEST ONLY)"}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               name,
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	m := &AWSIMDS{
		doc:     MarshalAWSDocument(doc),
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		key:     key,
		cert:    cert,
		tokens:  map[string]time.Time{},
	}
	if m.rsa2048, err = m.Sign(m.doc); err != nil {
		return nil, err
	}
	m.srv = httptest.NewServer(m)
	return m, nil
}

func fillAWSDefaults(d *AWSIdentityDocument) {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&d.AccountID, "123456789012")
	def(&d.Architecture, "x86_64")
	def(&d.Region, "us-east-1")
	def(&d.AvailabilityZone, d.Region+"a")
	def(&d.ImageID, "ami-0123456789abcdef0")
	def(&d.InstanceID, "i-0123456789abcdef0")
	def(&d.InstanceType, "t3.micro")
	def(&d.PrivateIP, "10.0.0.10")
	if d.PendingTime.IsZero() {
		d.PendingTime = time.Now().UTC().Truncate(time.Second)
	}
}

// MarshalAWSDocument renders d (with defaults for empty fields) the way IMDS
// does: pretty-printed with " : " separators, keys in AWS's order, unused
// fields null.
func MarshalAWSDocument(d AWSIdentityDocument) []byte {
	fillAWSDefaults(&d)
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	fields := [][2]string{
		{"accountId", q(d.AccountID)},
		{"architecture", q(d.Architecture)},
		{"availabilityZone", q(d.AvailabilityZone)},
		{"billingProducts", "null"},
		{"devpayProductCodes", "null"},
		{"marketplaceProductCodes", "null"},
		{"imageId", q(d.ImageID)},
		{"instanceId", q(d.InstanceID)},
		{"instanceType", q(d.InstanceType)},
		{"kernelId", "null"},
		{"pendingTime", q(d.PendingTime.UTC().Format(time.RFC3339))},
		{"privateIp", q(d.PrivateIP)},
		{"ramdiskId", "null"},
		{"region", q(d.Region)},
		{"version", q("2017-09-30")},
	}
	var b strings.Builder
	b.WriteString("{\n")
	for i, f := range fields {
		fmt.Fprintf(&b, "  %q : %s", f[0], f[1])
		if i < len(fields)-1 {
			b.WriteString(",")
		}
		b.WriteString("\n")
	}
	b.WriteString("}")
	return []byte(b.String())
}

// Sign returns an RSA-2048 signature of doc in IMDS's format: a PKCS#7
// SignedData with the document attached, SHA-256, signed attributes, no
// certificates, base64 without PEM armor, as /rsa2048 serves it. Tests use it
// to sign documents of their own with the test key.
func (m *AWSIMDS) Sign(doc []byte) (string, error) {
	sd, err := pkcs7.NewSignedData(doc)
	if err != nil {
		return "", err
	}
	sd.SetDigestAlgorithm(pkcs7.OIDDigestAlgorithmSHA256)
	if err := sd.AddSigner(m.cert, m.key, pkcs7.SignerInfoConfig{}); err != nil {
		return "", err
	}
	der, err := sd.Finish()
	if err != nil {
		return "", err
	}
	if der, err = stripPKCS7Certificates(der); err != nil {
		return "", err
	}
	return wrap64(base64.StdEncoding.EncodeToString(der)), nil
}

// stripPKCS7Certificates removes the certificates the signing library always
// embeds: IMDS's signatures carry none, so a verifier must bring its own.
func stripPKCS7Certificates(der []byte) ([]byte, error) {
	type contentInfo struct {
		ContentType asn1.ObjectIdentifier
		Content     asn1.RawValue // [0] EXPLICIT SignedData
	}
	type signedDataIn struct {
		Version          int
		DigestAlgorithms asn1.RawValue
		ContentInfo      asn1.RawValue
		Certificates     asn1.RawValue `asn1:"optional,tag:0"`
		CRLs             asn1.RawValue `asn1:"optional,tag:1"`
		SignerInfos      asn1.RawValue
	}
	type signedDataOut struct {
		Version          int
		DigestAlgorithms asn1.RawValue
		ContentInfo      asn1.RawValue
		SignerInfos      asn1.RawValue
	}
	var outer contentInfo
	if rest, err := asn1.Unmarshal(der, &outer); err != nil || len(rest) > 0 {
		return nil, errors.New("simulator: signing library produced malformed PKCS#7")
	}
	var in signedDataIn
	if rest, err := asn1.Unmarshal(outer.Content.Bytes, &in); err != nil || len(rest) > 0 {
		return nil, errors.New("simulator: signing library produced malformed SignedData")
	}
	inner, err := asn1.Marshal(signedDataOut{in.Version, in.DigestAlgorithms, in.ContentInfo, in.SignerInfos})
	if err != nil {
		return nil, err
	}
	return asn1.Marshal(struct {
		ContentType asn1.ObjectIdentifier
		Content     asn1.RawValue
	}{outer.ContentType, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: inner}})
}

// wrap64 breaks base64 into 64-character lines, as IMDS serves it.
func wrap64(s string) string {
	var b strings.Builder
	for len(s) > 64 {
		b.WriteString(s[:64])
		b.WriteByte('\n')
		s = s[64:]
	}
	b.WriteString(s)
	return b.String()
}

// URL is the base URL, for the agent's IMDS endpoint.
func (m *AWSIMDS) URL() string { return m.srv.URL }

// Close stops the server.
func (m *AWSIMDS) Close() { m.srv.Close() }

// CertPEM is the test certificate that signs the documents; a test server
// trusts it by adding it to its aws_iid certificates.
func (m *AWSIMDS) CertPEM() []byte { return bytes.Clone(m.certPEM) }

// Document is the document as served.
func (m *AWSIMDS) Document() []byte { return bytes.Clone(m.doc) }

// RSA2048 is the signature as served.
func (m *AWSIMDS) RSA2048() string { return m.rsa2048 }

// Fail makes the next n requests fail with HTTP 500.
func (m *AWSIMDS) Fail(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fail = n
}

// Garbage makes the document and signature endpoints serve garbage (with
// HTTP 200) from now on; the token endpoint keeps working.
func (m *AWSIMDS) Garbage() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.garbage = true
}

// Requests is the number of requests served so far.
func (m *AWSIMDS) Requests() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.requests
}

// ServeHTTP implements IMDSv2. Tests may also call it directly, without the
// network (under testing/synctest, for instance).
func (m *AWSIMDS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.requests++
	if m.fail > 0 {
		m.fail--
		http.Error(w, "simulated failure", http.StatusInternalServerError)
		return
	}
	if r.URL.Path == "/latest/api/token" {
		if r.Method != http.MethodPut {
			http.Error(w, "", http.StatusMethodNotAllowed)
			return
		}
		if r.Header.Get("X-Forwarded-For") != "" {
			http.Error(w, "", http.StatusForbidden) // as IMDS: no tokens through a proxy
			return
		}
		ttl, err := strconv.Atoi(r.Header.Get("X-aws-ec2-metadata-token-ttl-seconds"))
		if err != nil || ttl < 1 || ttl > 21600 {
			http.Error(w, "", http.StatusBadRequest)
			return
		}
		tok := make([]byte, 32)
		rand.Read(tok)
		t := base64.RawURLEncoding.EncodeToString(tok)
		m.tokens[t] = time.Now().Add(time.Duration(ttl) * time.Second)
		w.Write([]byte(t))
		return
	}
	if r.Method != http.MethodGet {
		http.Error(w, "", http.StatusMethodNotAllowed)
		return
	}
	if exp, ok := m.tokens[r.Header.Get("X-aws-ec2-metadata-token")]; !ok || time.Now().After(exp) {
		http.Error(w, "", http.StatusUnauthorized)
		return
	}
	switch r.URL.Path {
	case "/latest/dynamic/instance-identity/document":
		if m.garbage {
			w.Write([]byte("<html><body>502 Bad Gateway</body></html>"))
			return
		}
		w.Write(m.doc)
	case "/latest/dynamic/instance-identity/rsa2048":
		if m.garbage {
			w.Write([]byte("%%% not base64 %%%"))
			return
		}
		w.Write([]byte(m.rsa2048))
	default:
		http.NotFound(w, r)
	}
}
