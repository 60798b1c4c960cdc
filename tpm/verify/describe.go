package verify

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Describe is a one-line reading of an event's data for people: the
// variable and what it holds, the string an action or a bootloader logged,
// the version the firmware reported. It trusts nothing and decides nothing.
func (e *Event) Describe() string {
	d := e.Data
	switch e.Type {
	case EvNoAction:
		switch {
		case strings.HasPrefix(string(d), string(specIDSignature)):
			return "Spec ID header"
		case strings.HasPrefix(string(d), string(startupLocalitySignature)) && len(d) == len(startupLocalitySignature)+1:
			return fmt.Sprintf("StartupLocality %d", d[len(d)-1])
		}
	case EvSeparator:
		if len(d) == 4 {
			return fmt.Sprintf("separator 0x%08x", binary.LittleEndian.Uint32(d))
		}
	case EvSCRTMVersion:
		return "firmware " + firmwareString(d)
	case EvEFIVariableDriverConfig, EvEFIVariableBoot, EvEFIVariableBoot2, EvEFIVariableAuthority:
		v, err := parseVariable(d)
		if err != nil {
			break
		}
		switch {
		case v.Name == "SecureBoot" && len(v.Data) == 1:
			return fmt.Sprintf("SecureBoot = %d", v.Data[0])
		case e.Type == EvEFIVariableAuthority:
			if der, ok := authorityCert(v.Data); ok {
				return fmt.Sprintf("%s: %s", v.Name, newCert(der))
			}
		case e.Type == EvEFIVariableDriverConfig:
			if db, err := parseSignatureDB(v.Data); err == nil {
				return fmt.Sprintf("%s: %d certificate(s), %d SHA-256 hash(es), %d other", v.Name, len(db.Certs), len(db.Hashes), db.Other)
			}
		}
		return fmt.Sprintf("%s (%d bytes)", v.Name, len(v.Data))
	case EvEFIBootServicesApp, EvEFIBootServicesDriver, EvEFIRuntimeServicesDriver:
		return "image (digest is its Authenticode hash)"
	}
	if s := cString(d); len(s) > 0 && utf8.ValidString(s) && printable(s) && len(s) >= len(d)-1 {
		return quoteShort(s)
	}
	if isUTF16(d) {
		if s := utf16String(d); printable(s) && s != "" {
			return quoteShort(s)
		}
	}
	if len(d) > 24 {
		return fmt.Sprintf("%d bytes: %s…", len(d), hex.EncodeToString(d[:24]))
	}
	return hex.EncodeToString(d)
}

func quoteShort(s string) string {
	if len(s) > 160 {
		s = s[:160] + "…"
	}
	return fmt.Sprintf("%q", s)
}
