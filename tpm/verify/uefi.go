package verify

import (
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"unicode/utf16"
)

// UEFI structures measured into PCR 7 (UEFI 2.x spec, sections 32.4 and the
// TCG PC Client PFP's UEFI_VARIABLE_DATA).

type guid [16]byte

// String formats a GUID as UEFI writes it (first three fields little-endian).
func (g guid) String() string {
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x",
		binary.LittleEndian.Uint32(g[0:4]), binary.LittleEndian.Uint16(g[4:6]), binary.LittleEndian.Uint16(g[6:8]), g[8:10], g[10:16])
}

func mustGUID(s string) guid {
	var g guid
	b, err := hex.DecodeString(s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:36])
	if err != nil || len(b) != 16 {
		panic("bad GUID " + s)
	}
	binary.LittleEndian.PutUint32(g[0:4], binary.BigEndian.Uint32(b[0:4]))
	binary.LittleEndian.PutUint16(g[4:6], binary.BigEndian.Uint16(b[4:6]))
	binary.LittleEndian.PutUint16(g[6:8], binary.BigEndian.Uint16(b[6:8]))
	copy(g[8:], b[8:])
	return g
}

var (
	efiGlobalVariable     = mustGUID("8be4df61-93ca-11d2-aa0d-00e098032b8c")
	efiImageSecurityDB    = mustGUID("d719b2cb-3d3a-4596-a3bc-dad00e67656f")
	efiCertX509           = mustGUID("a5c059a1-94e4-4aa7-87b5-ab155c2bf072")
	efiCertSHA256         = mustGUID("c1c41626-504c-4092-aca9-41f936934328")
	maxSignatureListItems = 4096
)

// variable is a UEFI_VARIABLE_DATA.
type variable struct {
	GUID guid
	Name string
	Data []byte
}

// parseVariable reads a UEFI_VARIABLE_DATA that must fill b exactly.
func parseVariable(b []byte) (*variable, error) {
	r := &reader{b: b}
	var hdr struct {
		GUID             guid
		NameLen, DataLen uint64
	}
	if err := r.read(&hdr); err != nil {
		return nil, err
	}
	if hdr.NameLen > 1024 || hdr.DataLen > uint64(len(b)) {
		return nil, fmt.Errorf("variable name of %d characters or data of %d bytes does not fit", hdr.NameLen, hdr.DataLen)
	}
	nb, err := r.bytes(int(hdr.NameLen) * 2)
	if err != nil {
		return nil, err
	}
	d, err := r.bytes(int(hdr.DataLen))
	if err != nil {
		return nil, err
	}
	if !r.done() {
		return nil, fmt.Errorf("%d trailing bytes", len(b)-r.off)
	}
	return &variable{GUID: hdr.GUID, Name: utf16String(nb), Data: d}, nil
}

// utf16String decodes UTF-16LE, stopping at the first NUL.
func utf16String(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}

// Cert is a certificate in a Secure Boot database or a boot authority,
// named by the SHA-256 of its DER bytes. Firmware certificates are often
// malformed by Go's standards (negative serial numbers, bad encodings): the
// fingerprint is computed over the bytes whatever they are, and Subject is
// filled only when the certificate parses. Nothing trusts the certificate
// itself; policies compare fingerprints.
type Cert struct {
	SHA256  string `json:"sha256"`
	Subject string `json:"subject,omitempty"`
}

func newCert(der []byte) Cert {
	sum := sha256.Sum256(der)
	c := Cert{SHA256: hex.EncodeToString(sum[:])}
	if x, err := x509.ParseCertificate(der); err == nil {
		c.Subject = x.Subject.String()
	} else if subj := lenientSubject(der); subj != "" {
		c.Subject = subj
	}
	return c
}

// lenientSubject reads only the subject of a certificate x509 refuses (for
// example for a negative serial number, common in firmware PK certificates).
func lenientSubject(der []byte) string {
	var c struct {
		TBS asn1.RawValue
	}
	if _, err := asn1.Unmarshal(der, &c); err != nil {
		return ""
	}
	var tbs struct {
		Version  asn1.RawValue `asn1:"optional,explicit,tag:0"`
		Serial   asn1.RawValue
		Sig      asn1.RawValue
		Issuer   asn1.RawValue
		Validity asn1.RawValue
		Subject  asn1.RawValue
	}
	if _, err := asn1.Unmarshal(c.TBS.FullBytes, &tbs); err != nil {
		return ""
	}
	var rdn pkix.RDNSequence
	if _, err := asn1.Unmarshal(tbs.Subject.FullBytes, &rdn); err != nil {
		return ""
	}
	var name pkix.Name
	name.FillFromRDNSequence(&rdn)
	return name.String()
}

// signatureDB is a Secure Boot database: EFI_SIGNATURE_LISTs.
type signatureDB struct {
	Certs  []Cert
	Hashes []string // SHA-256 hashes, hex
	Other  int      // entries of other types (SHA-1, X509_SHA256, …), counted
}

// parseSignatureDB reads the EFI_SIGNATURE_LISTs that make up b exactly.
func parseSignatureDB(b []byte) (*signatureDB, error) {
	db := &signatureDB{}
	r := &reader{b: b}
	n := 0
	for !r.done() {
		var hdr struct {
			Type                          guid
			ListSize, HeaderSize, SigSize uint32
		}
		start := r.off
		if err := r.read(&hdr); err != nil {
			return nil, err
		}
		if hdr.ListSize < 28 || int(hdr.ListSize) > len(b)-start || hdr.SigSize < 16 || hdr.HeaderSize > hdr.ListSize-28 {
			return nil, fmt.Errorf("signature list at byte %d has inconsistent sizes", start)
		}
		if _, err := r.bytes(int(hdr.HeaderSize)); err != nil {
			return nil, err
		}
		body := int(hdr.ListSize) - 28 - int(hdr.HeaderSize)
		if body%int(hdr.SigSize) != 0 {
			return nil, fmt.Errorf("signature list at byte %d: %d bytes of signatures is not a multiple of %d", start, body, hdr.SigSize)
		}
		for range body / int(hdr.SigSize) {
			if n++; n > maxSignatureListItems {
				return nil, fmt.Errorf("more than %d signatures", maxSignatureListItems)
			}
			s, _ := r.bytes(int(hdr.SigSize))
			data := s[16:] // after the owner GUID
			switch guid(hdr.Type) {
			case efiCertX509:
				db.Certs = append(db.Certs, newCert(data))
			case efiCertSHA256:
				if len(data) != 32 {
					return nil, fmt.Errorf("SHA-256 signature of %d bytes", len(data))
				}
				db.Hashes = append(db.Hashes, hex.EncodeToString(data))
			default:
				db.Other++
			}
		}
	}
	return db, nil
}

// authorityCert reads the certificate of an EV_EFI_VARIABLE_AUTHORITY
// event's variable data: an EFI_SIGNATURE_DATA (owner GUID and DER), as
// firmware logs the db entry that verified an image, or a bare DER
// certificate, as shim logs its built-in vendor certificate. ok is false for
// other authority data (shim's SbatLevel, for example).
func authorityCert(d []byte) (der []byte, ok bool) {
	if isDERSequence(d) {
		return d, true
	}
	if len(d) > 16 && isDERSequence(d[16:]) {
		return d[16:], true
	}
	return nil, false
}

// isDERSequence reports whether b is exactly one DER SEQUENCE.
func isDERSequence(b []byte) bool {
	var v asn1.RawValue
	rest, err := asn1.Unmarshal(b, &v)
	return err == nil && len(rest) == 0 && v.Tag == asn1.TagSequence && v.IsCompound
}
