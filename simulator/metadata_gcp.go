package simulator

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// GCPInstance is the GCE instance a GCPMetadata impersonates: the
// google.compute_engine claims of its identity tokens.
type GCPInstance struct {
	ProjectID     string
	ProjectNumber int64
	Zone          string
	InstanceID    string // decimal, as GCE's
	InstanceName  string
	// Created is the instance creation time; default an hour before
	// NewGCPMetadata.
	Created time.Time
	// ServiceAccount is the email of the default service account; default
	// <ProjectNumber>-compute@developer.gserviceaccount.com.
	ServiceAccount string
}

// GCPMetadata is a fake GCE metadata server: it serves instance identity
// tokens (format=full, RS256, one hour) signed by a test key, and that key as
// a JWKS, the way https://www.googleapis.com/oauth2/v3/certs serves Google's.
//
// DEV/TEST ONLY. Its key is generated in memory for each instance. A server
// trusts it only when told to explicitly (its JWKS or JWKSURL as the gcp_iit
// key source): never put either in a production configuration.
type GCPMetadata struct {
	srv  *httptest.Server
	inst GCPInstance

	mu       sync.Mutex
	keys     *metadataKeys
	now      func() time.Time
	faults   metadataFaults
	tokens   int
	jwksHits int
}

// NewGCPMetadata starts a fake metadata server for inst. Close it when done.
func NewGCPMetadata(inst GCPInstance) (*GCPMetadata, error) {
	if inst.ProjectID == "" || inst.InstanceID == "" || inst.InstanceName == "" || inst.Zone == "" || inst.ProjectNumber == 0 {
		return nil, errors.New("simulator: a GCP instance needs a project ID and number, a zone, an instance ID and name")
	}
	if inst.Created.IsZero() {
		inst.Created = time.Now().Add(-time.Hour)
	}
	if inst.ServiceAccount == "" {
		inst.ServiceAccount = fmt.Sprintf("%d-compute@developer.gserviceaccount.com", inst.ProjectNumber)
	}
	keys, err := newMetadataKeys(false)
	if err != nil {
		return nil, err
	}
	m := &GCPMetadata{inst: inst, keys: keys, now: time.Now}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /computeMetadata/v1/instance/service-accounts/{sa}/identity", m.identity)
	mux.HandleFunc("GET /oauth2/v3/certs", m.certs)
	m.srv = httptest.NewServer(mux)
	return m, nil
}

// Close stops the server; requests fail as if the metadata server were
// unreachable.
func (m *GCPMetadata) Close() { m.srv.Close() }

// URL is the metadata server's base URL (the agent's metadata URL).
func (m *GCPMetadata) URL() string { return m.srv.URL }

// JWKSURL is the URL of the test keys, as a JWKS.
func (m *GCPMetadata) JWKSURL() string { return m.srv.URL + "/oauth2/v3/certs" }

// JWKS returns the test keys (the current one and any rotated out) as a
// JWKS document.
func (m *GCPMetadata) JWKS() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.keys.jwks(nil)
}

// KeyID returns the ID of the key that signs tokens now.
func (m *GCPMetadata) KeyID() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.keys.kid
}

// RotateKey makes a new signing key. The JWKS keeps the old keys too, as
// Google's does during a rotation.
func (m *GCPMetadata) RotateKey() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.keys.rotate()
}

// SetClock sets the time tokens are issued at; default time.Now.
func (m *GCPMetadata) SetClock(now func() time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.now = now
}

// Fail makes the next n identity requests answer 500.
func (m *GCPMetadata) Fail(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.faults.fail = n
}

// Garbage makes every identity request from now on answer 200 with a body
// that is not a token.
func (m *GCPMetadata) Garbage() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.faults.garbage = true
}

// Reset clears Fail and Garbage.
func (m *GCPMetadata) Reset() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.faults = metadataFaults{}
}

// Requests returns how many identity and JWKS requests were served
// (including refused and faulty ones).
func (m *GCPMetadata) Requests() (identity, jwks int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.tokens, m.jwksHits
}

// Token mints an identity token for audience, as the metadata server would
// hand it to the instance.
func (m *GCPMetadata) Token(audience string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.token(audience)
}

// Claims returns the claims a token for audience issued at iat carries, in
// the shape of Google's (format=full): tests alter them and sign them with
// SignClaims.
func (m *GCPMetadata) Claims(audience string, iat time.Time) map[string]any {
	in := m.inst
	saID := fmt.Sprintf("1%020d", in.ProjectNumber) // the service account's unique ID
	return map[string]any{
		"aud":            audience,
		"azp":            saID,
		"email":          in.ServiceAccount,
		"email_verified": true,
		"exp":            iat.Add(time.Hour).Unix(),
		"iat":            iat.Unix(),
		"iss":            "https://accounts.google.com",
		"sub":            saID,
		"google": map[string]any{
			"compute_engine": map[string]any{
				"instance_creation_timestamp": in.Created.Unix(),
				"instance_id":                 in.InstanceID,
				"instance_name":               in.InstanceName,
				"project_id":                  in.ProjectID,
				"project_number":              in.ProjectNumber,
				"zone":                        in.Zone,
			},
		},
	}
}

// SignClaims signs claims with the current test key, as a compact JWT.
func (m *GCPMetadata) SignClaims(claims any) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.keys.sign(claims, nil)
}

func (m *GCPMetadata) token(audience string) (string, error) {
	return m.keys.sign(m.Claims(audience, m.now()), nil)
}

func (m *GCPMetadata) identity(w http.ResponseWriter, r *http.Request) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tokens++
	w.Header().Set("Metadata-Flavor", "Google")
	if r.Header.Get("Metadata-Flavor") != "Google" {
		http.Error(w, "Missing Metadata-Flavor:Google header.", http.StatusForbidden)
		return
	}
	if sa := r.PathValue("sa"); sa != "default" && sa != m.inst.ServiceAccount {
		http.Error(w, "service account not found", http.StatusNotFound)
		return
	}
	aud := r.URL.Query().Get("audience")
	if aud == "" {
		http.Error(w, "non-empty audience parameter required", http.StatusBadRequest)
		return
	}
	if m.faults.serve(w) {
		return
	}
	tok, err := m.token(aud)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/text")
	w.Write([]byte(tok))
}

func (m *GCPMetadata) certs(w http.ResponseWriter, r *http.Request) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.jwksHits++
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.Header().Set("Cache-Control", "public, max-age=3600, must-revalidate, no-transform")
	w.Write(m.keys.jwks(nil))
}

// metadataFaults are the faults a fake metadata service injects.
type metadataFaults struct {
	fail    int
	garbage bool
}

// serve answers with the next fault, if any, and says whether it did.
func (f *metadataFaults) serve(w http.ResponseWriter) bool {
	switch {
	case f.fail > 0:
		f.fail--
		http.Error(w, "simulated metadata server failure", http.StatusInternalServerError)
		return true
	case f.garbage:
		w.Write([]byte("<html><body>captive portal</body></html>\x00\xff"))
		return true
	}
	return false
}

// metadataKeys are the RS256 test keys of a fake metadata service: one signs,
// all are published.
type metadataKeys struct {
	withCerts bool // publish x5c and x5t, as Microsoft does
	key       *rsa.PrivateKey
	kid       string
	x5t       string
	published []jose.JSONWebKey
}

func newMetadataKeys(withCerts bool) (*metadataKeys, error) {
	k := &metadataKeys{withCerts: withCerts}
	if err := k.rotate(); err != nil {
		return nil, err
	}
	return k, nil
}

// rotate makes a new signing key and publishes it beside the old ones.
func (k *metadataKeys) rotate() error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("simulator: generating a test signing key: %w", err)
	}
	id := make([]byte, 20)
	rand.Read(id)
	jwk := jose.JSONWebKey{Key: key.Public(), KeyID: hex.EncodeToString(id), Algorithm: string(jose.RS256), Use: "sig"}
	x5t := ""
	if k.withCerts {
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(1),
			Subject:      pkix.Name{CommonName: "accounts.accesscontrol.windows.net (Plinth TEST key)"},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(365 * 24 * time.Hour),
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		if err != nil {
			return fmt.Errorf("simulator: test key certificate: %w", err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return err
		}
		sum := sha1.Sum(der)
		x5t = base64.RawURLEncoding.EncodeToString(sum[:])
		// Microsoft's key IDs are the certificate thumbprint and carry no alg.
		jwk.KeyID, jwk.Algorithm = x5t, ""
		jwk.Certificates = []*x509.Certificate{cert}
		jwk.CertificateThumbprintSHA1 = sum[:]
	}
	k.key, k.kid, k.x5t = key, jwk.KeyID, x5t
	k.published = append(k.published, jwk)
	return nil
}

// jwks renders the published keys, each with extra members (Microsoft adds
// "issuer").
func (k *metadataKeys) jwks(extra map[string]any) []byte {
	keys := make([]map[string]any, 0, len(k.published))
	for _, jwk := range k.published {
		b, err := jwk.MarshalJSON()
		if err != nil {
			panic(err) // a public RSA key always marshals
		}
		var m map[string]any
		json.Unmarshal(b, &m)
		for n, v := range extra {
			m[n] = v
		}
		keys = append(keys, m)
	}
	b, _ := json.Marshal(map[string]any{"keys": keys})
	return b
}

// sign signs claims as a compact JWT with the current key, the header
// carrying typ JWT, kid and any extra members.
func (k *metadataKeys) sign(claims any, extra map[jose.HeaderKey]any) (string, error) {
	opts := (&jose.SignerOptions{}).WithType("JWT")
	for n, v := range extra {
		opts = opts.WithHeader(n, v)
	}
	if k.x5t != "" {
		opts = opts.WithHeader("x5t", k.x5t)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: k.key, KeyID: k.kid}}, opts)
	if err != nil {
		return "", err
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", err
	}
	return jws.CompactSerialize()
}

// unixString is how Azure's token endpoint writes times: decimal seconds in
// a JSON string.
func unixString(t time.Time) string { return strconv.FormatInt(t.Unix(), 10) }
