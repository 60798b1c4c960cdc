package verify_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/plinth-id/plinth/tpm/verify"
)

// now is the verification time of the EK certificate tests.
var now = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

var (
	oidSAN          = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidSubjectDir   = asn1.ObjectIdentifier{2, 5, 29, 9}
	oidTCGEKCert    = asn1.ObjectIdentifier{2, 23, 133, 8, 1}
	oidManufacturer = asn1.ObjectIdentifier{2, 23, 133, 2, 1}
	oidModel        = asn1.ObjectIdentifier{2, 23, 133, 2, 2}
	oidVersion      = asn1.ObjectIdentifier{2, 23, 133, 2, 3}
	oidTPMSpec      = asn1.ObjectIdentifier{2, 23, 133, 2, 16}
)

// testCA is a manufacturer CA made for the test, the way go-spiffe's tests
// build a real CA rather than mock x509.
type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func newCA(t testing.TB, cn string, parent *testCA) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{Organization: []string{"Test TPM Maker"}, CommonName: cn},
		NotBefore:             now.AddDate(-5, 0, 0),
		NotAfter:              now.AddDate(20, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	signer, issuer := crypto.Signer(key), tmpl
	if parent != nil {
		signer, issuer = parent.key, parent.cert
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: c, key: key}
}

func (ca *testCA) pem() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})
}

// tcgSAN is the subject alternative name of the TCG EK Credential Profile
// (and swtpm): one directoryName holding one RDN with the TPM's
// manufacturer, model and version.
func tcgSAN(t testing.TB, extra ...asn1.RawValue) []byte {
	t.Helper()
	name, err := asn1.Marshal(pkix.RDNSequence{pkix.RelativeDistinguishedNameSET{
		{Type: oidManufacturer, Value: "id:00001014"},
		{Type: oidModel, Value: "swtpm"},
		{Type: oidVersion, Value: "id:20191023"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	names := append([]asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: name}}, extra...)
	return sanOf(t, names...)
}

func sanOf(t testing.TB, names ...asn1.RawValue) []byte {
	t.Helper()
	b, err := asn1.Marshal(names)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func uriName(u string) asn1.RawValue {
	return asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 6, Bytes: []byte(u)}
}

func dnsName(d string) asn1.RawValue {
	return asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 2, Bytes: []byte(d)}
}

// ekCertTemplate is an EK certificate shaped like swtpm's: empty subject,
// critical directoryName SAN, TCG EK EKU, a TPM specification attribute.
func ekCertTemplate(t testing.TB, pub crypto.PublicKey) *x509.Certificate {
	t.Helper()
	spec, err := asn1.Marshal([]struct {
		Type   asn1.ObjectIdentifier
		Values []struct {
			Family   string
			Level    int
			Revision int
		} `asn1:"set"`
	}{{Type: oidTPMSpec, Values: []struct {
		Family   string
		Level    int
		Revision int
	}{{"2.0", 0, 138}}}})
	if err != nil {
		t.Fatal(err)
	}
	ku := x509.KeyUsageKeyEncipherment
	if _, ok := pub.(*ecdsa.PublicKey); ok {
		ku = x509.KeyUsageKeyAgreement
	}
	return &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		NotBefore:             now.AddDate(-1, 0, 0),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              ku,
		BasicConstraintsValid: true,
		UnknownExtKeyUsage:    []asn1.ObjectIdentifier{oidTCGEKCert},
		ExtraExtensions: []pkix.Extension{
			{Id: oidSAN, Critical: true, Value: tcgSAN(t)},
			{Id: oidSubjectDir, Value: spec},
		},
	}
}

func (ca *testCA) issue(t testing.TB, tmpl *x509.Certificate, pub crypto.PublicKey) []byte {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// manufacturer is a root and an intermediate, and a verifier trusting them.
type manufacturer struct {
	root, inter *testCA
	v           *verify.EKVerifier
}

func newManufacturer(t testing.TB) *manufacturer {
	t.Helper()
	root := newCA(t, "Test EK Root", nil)
	inter := newCA(t, "Test EK Intermediate", root)
	v, err := verify.LoadEKVerifier(append(root.pem(), inter.pem()...))
	if err != nil {
		t.Fatal(err)
	}
	return &manufacturer{root: root, inter: inter, v: v}
}

func TestEKVerifierAccepts(t *testing.T) {
	m := newManufacturer(t)
	p384 := mustParse(t, withKey(tpmECCEKTemplate(), &p384Key().PublicKey))
	for name, ek := range map[string]*verify.Public{
		"rsa 2048": newRSAEK(t, 0).pub,
		"ecc p256": newECCEK(t, 0).pub,
		"ecc p384": p384,
	} {
		t.Run(name, func(t *testing.T) {
			der := m.inter.issue(t, ekCertTemplate(t, ek.Key), ek.Key)

			// The quirk is real: crypto/x509 alone refuses the certificate.
			plain, _ := x509.ParseCertificate(der)
			_, err := plain.Verify(x509.VerifyOptions{Roots: m.v.Roots, Intermediates: m.v.Intermediates, CurrentTime: now})
			if err == nil || !strings.Contains(err.Error(), "unhandled critical extension") {
				t.Fatalf("plain x509 Verify: %v, want unhandled critical extension", err)
			}

			cert, err := m.v.Verify(der, ek, now)
			if err != nil {
				t.Fatal(err)
			}
			info, err := verify.ParseEKCertInfo(cert)
			if err != nil {
				t.Fatal(err)
			}
			want := verify.EKCertInfo{Manufacturer: "id:00001014", Model: "swtpm", Version: "id:20191023",
				Issuer: "CN=Test EK Intermediate,O=Test TPM Maker"}
			if info != want {
				t.Errorf("EKCertInfo = %+v, want %+v", info, want)
			}
		})
	}
}

func TestEKVerifierVariants(t *testing.T) {
	m := newManufacturer(t)
	ek := newECCEK(t, 0).pub
	for _, tc := range []struct {
		name string
		edit func(*x509.Certificate)
	}{
		{"no EKU", func(c *x509.Certificate) { c.UnknownExtKeyUsage = nil }},
		{"EK EKU among others", func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth} }},
		{"non-critical directoryName SAN", func(c *x509.Certificate) { c.ExtraExtensions[0].Critical = false }},
		{"non-critical SAN with a URI too", func(c *x509.Certificate) {
			c.ExtraExtensions[0] = pkixExt(oidSAN, false, tcgSAN(t, uriName("urn:tpm:1")))
		}},
		{"no SAN", func(c *x509.Certificate) { c.ExtraExtensions = c.ExtraExtensions[1:] }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tmpl := ekCertTemplate(t, ek.Key)
			tc.edit(tmpl)
			if _, err := m.v.Verify(m.inter.issue(t, tmpl, ek.Key), ek, now); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func pkixExt(id asn1.ObjectIdentifier, critical bool, v []byte) pkix.Extension {
	return pkix.Extension{Id: id, Critical: critical, Value: v}
}

func TestEKVerifierRejects(t *testing.T) {
	m := newManufacturer(t)
	stranger := newManufacturer(t)
	ek, otherEK := newECCEK(t, 0).pub, newECCEK(t, 1).pub
	rsaEK := newRSAEK(t, 0).pub
	issue := func(edit func(*x509.Certificate)) []byte {
		tmpl := ekCertTemplate(t, ek.Key)
		if edit != nil {
			edit(tmpl)
		}
		return m.inter.issue(t, tmpl, ek.Key)
	}
	good := issue(nil)
	// Only the root: the intermediate is missing.
	rootOnly, err := verify.LoadEKVerifier(m.root.pem())
	if err != nil {
		t.Fatal(err)
	}

	const e = "verify: ek certificate: "
	for _, tc := range []struct {
		name string
		v    *verify.EKVerifier
		der  []byte
		ek   *verify.Public
		now  time.Time
		err  string
	}{
		{name: "good", der: good},
		{name: "unknown CA", der: stranger.inter.issue(t, ekCertTemplate(t, ek.Key), ek.Key),
			err: e + "signed by an unknown CA: x509: certificate signed by unknown authority (possibly because of \"x509: ECDSA verification failure\" while trying to verify candidate authority certificate \"Test EK Intermediate\")"},
		{name: "intermediate not configured", v: rootOnly, der: good,
			err: e + "signed by an unknown CA: x509: certificate signed by unknown authority"},
		{name: "expired", der: good, now: now.AddDate(11, 0, 0),
			err: e + "not valid at 2037-06-01T12:00:00Z: x509: certificate has expired or is not yet valid: current time 2037-06-01T12:00:00Z is after 2036-06-01T12:00:00Z"},
		{name: "not yet valid", der: good, now: now.AddDate(-2, 0, 0),
			err: e + "not valid at 2024-06-01T12:00:00Z: x509: certificate has expired or is not yet valid: current time 2024-06-01T12:00:00Z is before 2025-06-01T12:00:00Z"},
		{name: "for another key", der: good, ek: otherEK,
			err: e + "EK certificate is for a different key"},
		{name: "for another key type", der: good, ek: rsaEK,
			err: e + "EK certificate is for a different key"},
		{name: "critical SAN with a URI", der: issue(func(c *x509.Certificate) {
			c.ExtraExtensions[0] = pkixExt(oidSAN, true, sanOf(t, uriName("spiffe://example.org/tpm")))
		}), err: e + "unhandled critical extension 2.5.29.17 (subject alternative name): holds a uniformResourceIdentifier; only directoryName entries are accepted"},
		{name: "critical SAN with a directoryName and a dNSName", der: issue(func(c *x509.Certificate) {
			c.ExtraExtensions[0] = pkixExt(oidSAN, true, tcgSAN(t, dnsName("tpm.example.org")))
		}), err: e + "unhandled critical extension 2.5.29.17 (subject alternative name): holds a dNSName; only directoryName entries are accepted"},
		{name: "critical empty SAN", der: issue(func(c *x509.Certificate) {
			c.ExtraExtensions[0] = pkixExt(oidSAN, true, sanOf(t))
		}), err: e + "unhandled critical extension 2.5.29.17 (subject alternative name): holds no names"},
		{name: "critical SAN with a broken directoryName", der: issue(func(c *x509.Certificate) {
			c.ExtraExtensions[0] = pkixExt(oidSAN, true, sanOf(t, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: []byte{0x30, 0x03, 0x01, 0x01, 0xff}}))
		}), err: e + "unhandled critical extension 2.5.29.17 (subject alternative name): directoryName is not a valid Name"},
		{name: "another unhandled critical extension", der: issue(func(c *x509.Certificate) {
			c.ExtraExtensions = append(c.ExtraExtensions, pkixExt(asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}, true, []byte{5, 0}))
		}), err: e + "unhandled critical extension 1.3.6.1.4.1.99999.1"},
		{name: "web EKU only", der: issue(func(c *x509.Certificate) {
			c.UnknownExtKeyUsage = nil
			c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		}), err: e + "extended key usage does not include the TCG EK certificate usage 2.23.133.8.1"},
		{name: "garbage", der: []byte("not a certificate"),
			err: e + "malformed: x509: malformed certificate"},
		{name: "NV padding", der: append(append([]byte(nil), good...), 0xff, 0xff),
			err: e + "malformed: x509: trailing data"},
		{name: "truncated", der: good[:len(good)-10],
			err: e + "malformed: x509: malformed certificate"},
		{name: "no verifier", v: &verify.EKVerifier{}, der: good,
			err: e + "no manufacturer CAs configured"},
		{name: "no time", der: good, now: time.Time{}.Add(0),
			err: e + "no verification time given"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, k, at := m.v, ek, now
			if tc.v != nil {
				v = tc.v
			}
			if tc.ek != nil {
				k = tc.ek
			}
			if !tc.now.IsZero() || tc.name == "no time" {
				at = tc.now
			}
			cert, err := v.Verify(tc.der, k, at)
			wantErr(t, err, tc.err)
			if err != nil && cert != nil {
				t.Error("got a certificate with the error")
			}
		})
	}
	_, err = m.v.Verify(good, nil, now)
	wantErr(t, err, e+"no EK public key given")
}

func TestLoadEKVerifier(t *testing.T) {
	m := newManufacturer(t)
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}})
	for _, tc := range []struct {
		name string
		in   []byte
		err  string
	}{
		{"root and intermediate", append(m.root.pem(), m.inter.pem()...), ""},
		{"text around the blocks", []byte("# vendor A\n" + string(m.root.pem()) + "\n# end\n"), ""},
		{"empty", nil, "verify: ek ca bundle: no certificates"},
		{"not PEM", []byte("hello"), "verify: ek ca bundle: no certificates"},
		{"intermediate only", m.inter.pem(), "verify: ek ca bundle: no self-signed root CA among 1 certificates"},
		{"a private key", append(m.root.pem(), keyPEM...), `verify: ek ca bundle: block 2 is a "PRIVATE KEY", want CERTIFICATE`},
		{"broken certificate", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0}}), "verify: ek ca bundle: certificate 1: x509: malformed tbs certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := verify.LoadEKVerifier(tc.in)
			wantErr(t, err, tc.err)
			if err == nil && v.Roots == nil {
				t.Error("no roots")
			}
		})
	}
}

func TestParseEKCertInfo(t *testing.T) {
	m := newManufacturer(t)
	ek := newECCEK(t, 0).pub
	parse := func(edit func(*x509.Certificate)) *x509.Certificate {
		tmpl := ekCertTemplate(t, ek.Key)
		edit(tmpl)
		c, err := x509.ParseCertificate(m.inter.issue(t, tmpl, ek.Key))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	info, err := verify.ParseEKCertInfo(parse(func(c *x509.Certificate) { c.ExtraExtensions = c.ExtraExtensions[1:] }))
	if err != nil || info != (verify.EKCertInfo{Issuer: "CN=Test EK Intermediate,O=Test TPM Maker"}) {
		t.Errorf("no SAN: %+v, %v", info, err)
	}
	twoMakers := func(c *x509.Certificate) {
		name, _ := asn1.Marshal(pkix.RDNSequence{
			{{Type: oidManufacturer, Value: "id:00001014"}},
			{{Type: oidManufacturer, Value: "id:49465800"}},
		})
		c.ExtraExtensions[0] = pkixExt(oidSAN, false, sanOf(t, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: name}))
	}
	_, err = verify.ParseEKCertInfo(parse(twoMakers))
	wantErr(t, err, `verify: ek certificate: TPM attribute 2.23.133.2.1 has two values, "id:00001014" and "id:49465800"`)
	_, err = verify.ParseEKCertInfo(nil)
	wantErr(t, err, "verify: ek certificate: no certificate given")
}
