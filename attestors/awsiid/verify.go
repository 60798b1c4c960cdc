package awsiid

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	_ "embed"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"

	"github.com/smallstep/pkcs7"
)

//go:embed aws-rsa2048.pem
var awsPEM []byte

// parseAWSCerts parses the shipped certificates and their region labels.
func parseAWSCerts() (map[string]*x509.Certificate, error) {
	out := map[string]*x509.Certificate{}
	rest := awsPEM
	for {
		i := bytes.Index(rest, []byte("-----BEGIN"))
		if i < 0 {
			break
		}
		// The label is the last "# <region>: <name>" line before the block.
		region := ""
		for _, line := range strings.Split(string(rest[:i]), "\n") {
			if r, _, ok := strings.Cut(strings.TrimPrefix(line, "# "), ":"); ok && strings.HasPrefix(line, "# ") && regionRE.MatchString(r) {
				region = r
			}
		}
		var block *pem.Block
		block, rest = pem.Decode(rest[i:])
		if block == nil || block.Type != "CERTIFICATE" {
			return nil, errors.New("awsiid: shipped certificate file is malformed")
		}
		if region == "" {
			return nil, errors.New("awsiid: shipped certificate has no region label")
		}
		if _, dup := out[region]; dup {
			return nil, fmt.Errorf("awsiid: shipped certificates list region %s twice", region)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("awsiid: shipped certificate for %s: %v", region, err)
		}
		out[region] = cert
	}
	return out, nil
}

var shipped = sync.OnceValues(parseAWSCerts)

// AWSCertificates returns AWS's published RSA-2048 instance identity
// certificates shipped with Plinth, by region. The map is the caller's.
func AWSCertificates() map[string]*x509.Certificate {
	certs, err := shipped()
	if err != nil {
		panic(err) // the embedded file is checked by the tests
	}
	out := make(map[string]*x509.Certificate, len(certs))
	for r, c := range certs {
		out[r] = c
	}
	return out
}

// trusted is one certificate the server verifies signatures with.
type trusted struct {
	cert *x509.Certificate
	// region is the region a shipped AWS certificate signs for; "" for a
	// certificate from configuration, which may sign any region.
	region string
}

func (t trusted) String() string {
	if t.region != "" {
		return "AWS " + t.region + " certificate"
	}
	return fmt.Sprintf("configured certificate %q", t.cert.Subject.String())
}

// trustStore indexes trusted certificates by issuer and serial number, the
// way a PKCS#7 SignerInfo names its signer.
type trustStore map[string][]trusted

func issuerSerialKey(rawIssuer []byte, serial *big.Int) string {
	return string(rawIssuer) + "\x00" + serial.String()
}

func newTrustStore(extra []*x509.Certificate) (trustStore, error) {
	ts := trustStore{}
	add := func(t trusted) {
		k := issuerSerialKey(t.cert.RawIssuer, t.cert.SerialNumber)
		for _, have := range ts[k] {
			if bytes.Equal(have.cert.Raw, t.cert.Raw) {
				return
			}
		}
		ts[k] = append(ts[k], t)
	}
	aws, err := shipped()
	if err != nil {
		return nil, err
	}
	for region, c := range aws {
		add(trusted{cert: c, region: region})
	}
	for i, c := range extra {
		if c == nil {
			return nil, fmt.Errorf("awsiid: configured certificate %d is nil", i)
		}
		add(trusted{cert: c})
	}
	return ts, nil
}

// allowedDigests are the digest algorithms accepted in a SignerInfo. AWS
// uses SHA-256; SHA-1 is refused.
var allowedDigests = []asn1.ObjectIdentifier{
	pkcs7.OIDDigestAlgorithmSHA256,
	pkcs7.OIDDigestAlgorithmSHA384,
	pkcs7.OIDDigestAlgorithmSHA512,
}

// verify checks that rsa2048 is a PKCS#7 SignedData over exactly doc, signed
// by a trusted certificate, and returns that certificate. Its errors are
// rejection reasons.
//
// The trust decision never uses a certificate carried in the PKCS#7: the
// signer is looked up among the configured certificates by the issuer and
// serial number the SignerInfo names, the signature is checked with that
// certificate's key only, and an embedded certificate claiming to be the
// signer must be byte-identical to it. (SPIRE's azure_msi attested-document
// bug was verifying with the certificate the evidence carried.)
func (ts trustStore) verify(doc []byte, rsa2048 string) (*trusted, error) {
	der, err := base64.StdEncoding.DecodeString(stripSpace(rsa2048))
	if err != nil {
		return nil, fmt.Errorf("rsa2048 signature is not base64: %v", err)
	}
	p7, err := parsePKCS7(der)
	if err != nil {
		return nil, fmt.Errorf("rsa2048 signature is not a PKCS#7 SignedData: %v", err)
	}
	if n := len(p7.Signers); n != 1 {
		return nil, fmt.Errorf("PKCS#7 has %d signers (want exactly 1)", n)
	}
	si := p7.Signers[0]
	if !oidIn(si.DigestAlgorithm.Algorithm, allowedDigests) {
		return nil, fmt.Errorf("PKCS#7 digest algorithm %s is not allowed (want SHA-256, SHA-384 or SHA-512)", si.DigestAlgorithm.Algorithm)
	}
	ias := si.IssuerAndSerialNumber
	if ias.SerialNumber == nil {
		return nil, errors.New("PKCS#7 signer has no serial number")
	}
	candidates := ts[issuerSerialKey(ias.IssuerName.FullBytes, ias.SerialNumber)]
	if len(candidates) == 0 {
		return nil, fmt.Errorf("signed by an untrusted key: no trusted certificate has issuer %q and serial %x", nameString(ias.IssuerName.FullBytes), ias.SerialNumber)
	}

	if len(p7.Content) == 0 {
		return nil, errors.New("PKCS#7 carries no signed content")
	}

	embedded := p7.Certificates
	var signer *trusted
	var verr error
	for i := range candidates {
		p7.Certificates = []*x509.Certificate{candidates[i].cert}
		if verr = p7.Verify(); verr == nil {
			signer = &candidates[i]
			break
		}
	}
	p7.Certificates = embedded
	if signer == nil {
		var mismatch *pkcs7.MessageDigestMismatchError
		if errors.As(verr, &mismatch) {
			return nil, errors.New("the PKCS#7 content does not match its signed digest (altered after signing)")
		}
		return nil, fmt.Errorf("signed by an untrusted key: the signature does not verify with the %s (serial %x): %v", candidates[0], ias.SerialNumber, verr)
	}
	for _, c := range embedded {
		if bytes.Equal(c.RawIssuer, ias.IssuerName.FullBytes) && c.SerialNumber.Cmp(ias.SerialNumber) == 0 && !bytes.Equal(c.Raw, signer.cert.Raw) {
			return nil, errors.New("PKCS#7 signer certificate differs from the trusted certificate")
		}
	}
	if len(si.AuthenticatedAttributes) > 0 {
		var ct asn1.ObjectIdentifier
		if err := p7.UnmarshalSignedAttribute(pkcs7.OIDAttributeContentType, &ct); err != nil {
			return nil, fmt.Errorf("PKCS#7 signed attributes have no content type: %v", err)
		}
		if !ct.Equal(pkcs7.OIDData) {
			return nil, fmt.Errorf("PKCS#7 signs content of type %s (want data)", ct)
		}
	}
	if !bytes.Equal(p7.Content, doc) {
		return nil, errors.New("the PKCS#7 signs a different document than the one presented")
	}
	return signer, nil
}

// parsePKCS7 parses attacker-supplied DER/BER. A panic in the third-party
// parser must not take the server down, so it becomes an error (defense in
// depth: FuzzAttest has found none).
func parsePKCS7(der []byte) (p7 *pkcs7.PKCS7, err error) {
	defer func() {
		if r := recover(); r != nil {
			p7, err = nil, fmt.Errorf("malformed ASN.1 (%v)", r)
		}
	}()
	return pkcs7.Parse(der)
}

func oidIn(o asn1.ObjectIdentifier, set []asn1.ObjectIdentifier) bool {
	for _, s := range set {
		if o.Equal(s) {
			return true
		}
	}
	return false
}

// nameString renders a DER Name for an error message.
func nameString(der []byte) string {
	var rdn pkix.RDNSequence
	if _, err := asn1.Unmarshal(der, &rdn); err != nil {
		return fmt.Sprintf("(unparsable name %x)", der)
	}
	var n pkix.Name
	n.FillFromRDNSequence(&rdn)
	return n.String()
}

func stripSpace(s string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '\r', '\n':
			return -1
		}
		return r
	}, s)
}
