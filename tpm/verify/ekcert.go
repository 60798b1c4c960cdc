package verify

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"time"
)

// OIDs of the TCG EK Credential Profile and the one X.509 extension whose
// handling differs from crypto/x509's.
var (
	oidSAN             = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidTCGEKCert       = asn1.ObjectIdentifier{2, 23, 133, 8, 1}
	oidTPMManufacturer = asn1.ObjectIdentifier{2, 23, 133, 2, 1}
	oidTPMModel        = asn1.ObjectIdentifier{2, 23, 133, 2, 2}
	oidTPMVersion      = asn1.ObjectIdentifier{2, 23, 133, 2, 3}
)

// EKVerifier checks EK certificates against a set of TPM manufacturer CAs.
// It is safe for concurrent use once built.
type EKVerifier struct {
	Roots         *x509.CertPool
	Intermediates *x509.CertPool
}

// LoadEKVerifier builds an EKVerifier from a PEM bundle of manufacturer CA
// certificates: self-signed CA certificates become roots, all others
// intermediates. The bundle must hold at least one root and nothing but
// CERTIFICATE blocks.
func LoadEKVerifier(pemBundle []byte) (*EKVerifier, error) {
	const check = "ek ca bundle"
	v := &EKVerifier{Roots: x509.NewCertPool(), Intermediates: x509.NewCertPool()}
	roots, n := 0, 0
	for rest := pemBundle; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		n++
		if block.Type != "CERTIFICATE" {
			return nil, fail(check, "block %d is a %q, want CERTIFICATE", n, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fail(check, "certificate %d: %v", n, err)
		}
		if bytes.Equal(c.RawSubject, c.RawIssuer) && c.CheckSignatureFrom(c) == nil {
			v.Roots.AddCert(c)
			roots++
		} else {
			v.Intermediates.AddCert(c)
		}
	}
	switch {
	case n == 0:
		return nil, fail(check, "no certificates")
	case roots == 0:
		return nil, fail(check, "no self-signed root CA among %d certificates", n)
	}
	return v, nil
}

// EKCertInfo is what an EK certificate says about its TPM. Manufacturer,
// Model and Version come from the TCG attributes (tpmManufacturer
// 2.23.133.2.1, tpmModel 2.23.133.2.2, tpmVersion 2.23.133.2.3) in the
// certificate's subject alternative name, as written (a manufacturer is
// typically "id:" and 8 hex digits, e.g. "id:53544D20"); they are empty
// when absent. Issuer is the issuing CA's distinguished name. The fields
// are trustworthy only for a certificate EKVerifier.Verify accepted.
type EKCertInfo struct {
	Manufacturer string
	Model        string
	Version      string
	Issuer       string
}

// Verify checks an EK certificate (DER) for the EK ek at time now and
// returns the parsed certificate.
//
// EK certificates follow the TCG EK Credential Profile, not the web PKI,
// and crypto/x509 refuses them as they are. Verify handles the differences
// one by one rather than turning checks off:
//
//   - A critical subject alternative name holding only directoryName
//     entries (the TCG tpmManufacturer/tpmModel/tpmVersion attributes) is
//     accepted; crypto/x509 leaves such a SAN unhandled. A critical SAN
//     holding anything else, or not parsing as GeneralNames, is rejected as
//     an unhandled critical extension, and so is every other critical
//     extension crypto/x509 does not handle.
//   - The extended key usage must be absent or include the TCG EK
//     certificate usage 2.23.133.8.1; the chain is then built with
//     ExtKeyUsageAny, since no web usage applies (so, as crypto/x509 cannot
//     name the TCG usage, EKU limits on intermediates are not enforced).
//   - The chain must verify to one of v's roots at now, through v's
//     intermediates, with every other crypto/x509 check (validity periods,
//     CA basic constraints, path lengths, name constraints, signatures).
//   - The certificate's public key must equal ek's.
func (v *EKVerifier) Verify(certDER []byte, ek *Public, now time.Time) (*x509.Certificate, error) {
	const check = "ek certificate"
	if v == nil || v.Roots == nil {
		return nil, fail(check, "no manufacturer CAs configured")
	}
	if ek == nil || ek.Key == nil {
		return nil, fail(check, "no EK public key given")
	}
	if now.IsZero() {
		return nil, fail(check, "no verification time given")
	}
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return nil, fail(check, "malformed: %v", err)
	}

	// Decide the SAN ourselves, then let crypto/x509 see a copy from which
	// only that decision has been removed.
	unhandled := cert.UnhandledCriticalExtensions
	for _, e := range cert.Extensions {
		if !e.Id.Equal(oidSAN) || !e.Critical {
			continue
		}
		if _, err := parseTCGSAN(e.Value); err != nil {
			return nil, fail(check, "unhandled critical extension %s (subject alternative name): %s", oidSAN, err)
		}
		unhandled = slices.DeleteFunc(slices.Clone(unhandled), func(o asn1.ObjectIdentifier) bool { return o.Equal(oidSAN) })
	}
	if len(unhandled) > 0 {
		return nil, fail(check, "unhandled critical extension %s", unhandled[0])
	}
	if len(cert.ExtKeyUsage) > 0 || len(cert.UnknownExtKeyUsage) > 0 {
		found := false
		for _, u := range cert.UnknownExtKeyUsage {
			found = found || u.Equal(oidTCGEKCert)
		}
		if !found {
			return nil, fail(check, "extended key usage does not include the TCG EK certificate usage %s", oidTCGEKCert)
		}
	}
	cp := *cert
	cp.UnhandledCriticalExtensions = unhandled
	_, err = cp.Verify(x509.VerifyOptions{
		Roots:         v.Roots,
		Intermediates: v.Intermediates,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		var ua x509.UnknownAuthorityError
		var ci x509.CertificateInvalidError
		switch {
		case errors.As(err, &ua):
			return nil, fail(check, "signed by an unknown CA: %v", err)
		case errors.As(err, &ci) && ci.Reason == x509.Expired:
			return nil, fail(check, "not valid at %s: %v", now.UTC().Format(time.RFC3339), err)
		default:
			return nil, fail(check, "chain does not verify: %v", err)
		}
	}
	k, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !k.Equal(ek.Key) {
		return nil, fail(check, "EK certificate is for a different key")
	}
	return cert, nil
}

// ParseEKCertInfo reads the TCG TPM attributes and the issuer of an EK
// certificate. A SAN directoryName that does not parse, or that gives one
// attribute two different values, is an error; a certificate without the
// attributes gives empty fields.
func ParseEKCertInfo(cert *x509.Certificate) (EKCertInfo, error) {
	const check = "ek certificate"
	if cert == nil {
		return EKCertInfo{}, fail(check, "no certificate given")
	}
	info := EKCertInfo{Issuer: cert.Issuer.String()}
	for _, e := range cert.Extensions {
		if !e.Id.Equal(oidSAN) {
			continue
		}
		names, err := parseGeneralNames(e.Value)
		if err != nil {
			return EKCertInfo{}, fail(check, "subject alternative name: %s", err)
		}
		for _, n := range names {
			if n.dir == nil {
				continue
			}
			for _, rdn := range n.dir {
				for _, atv := range rdn {
					var dst *string
					switch {
					case atv.Type.Equal(oidTPMManufacturer):
						dst = &info.Manufacturer
					case atv.Type.Equal(oidTPMModel):
						dst = &info.Model
					case atv.Type.Equal(oidTPMVersion):
						dst = &info.Version
					default:
						continue
					}
					s, ok := atv.Value.(string)
					if !ok {
						return EKCertInfo{}, fail(check, "TPM attribute %s is not a string", atv.Type)
					}
					if *dst != "" && *dst != s {
						return EKCertInfo{}, fail(check, "TPM attribute %s has two values, %q and %q", atv.Type, *dst, s)
					}
					*dst = s
				}
			}
		}
	}
	return info, nil
}

// generalName is one GeneralName of a SAN; dir is set for a directoryName.
type generalName struct {
	tag int
	dir pkix.RDNSequence
}

var generalNameTags = map[int]string{
	0: "otherName", 1: "rfc822Name", 2: "dNSName", 3: "x400Address", 4: "directoryName",
	5: "ediPartyName", 6: "uniformResourceIdentifier", 7: "iPAddress", 8: "registeredID",
}

// parseGeneralNames parses a SAN extension value (GeneralNames, RFC 5280
// 4.2.1.6), including the Name inside every directoryName.
func parseGeneralNames(der []byte) ([]generalName, error) {
	var raw []asn1.RawValue
	rest, err := asn1.Unmarshal(der, &raw)
	if err != nil || len(rest) > 0 {
		return nil, reason("not a valid GeneralNames")
	}
	out := make([]generalName, 0, len(raw))
	for _, r := range raw {
		if r.Class != asn1.ClassContextSpecific {
			return nil, reason("not a valid GeneralNames")
		}
		n := generalName{tag: r.Tag}
		if r.Tag == 4 {
			if !r.IsCompound {
				return nil, reason("directoryName is not a valid Name")
			}
			var rdn pkix.RDNSequence
			rest, err := asn1.Unmarshal(r.Bytes, &rdn)
			if err != nil || len(rest) > 0 {
				return nil, reason("directoryName is not a valid Name")
			}
			n.dir = rdn
		}
		out = append(out, n)
	}
	return out, nil
}

// parseTCGSAN accepts a SAN the TCG way: one or more GeneralName entries,
// all directoryName.
func parseTCGSAN(der []byte) ([]generalName, error) {
	names, err := parseGeneralNames(der)
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, reason("holds no names")
	}
	for _, n := range names {
		if n.tag != 4 {
			what, ok := generalNameTags[n.tag]
			if !ok {
				what = fmt.Sprintf("name of tag %d", n.tag)
			}
			return nil, reason("holds a " + what + "; only directoryName entries are accepted")
		}
	}
	return names, nil
}
