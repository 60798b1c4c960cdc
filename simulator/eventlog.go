package simulator

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"unicode/utf16"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/uuid"

	"github.com/plinth-id/plinth/tpm/verify"
)

// The layouts below follow the TCG PC Client Platform Firmware Profile
// Specification, Family "2.0" (revision 1.05): TCG_PCClientPCREvent,
// TCG_EfiSpecIdEvent, the StartupLocality EV_NO_ACTION event, TCG_PCR_EVENT2,
// UEFI_VARIABLE_DATA, UEFI_IMAGE_LOAD_EVENT and UEFI_PLATFORM_FIRMWARE_BLOB.
// They were checked byte for byte against the real firmware logs in
// go-tpm-tools' internal/test/eventlogs (ubuntu-2104-no-dbx.bin,
// arch-linux-workstation.bin).

// EventLogBuilder builds a synthetic crypto-agile TCG event log with the sha1
// and sha256 banks, for tests: a verifier can parse and replay it, and
// ExtendEventLog makes a TPM's PCRs match it. The zero value is not usable;
// use NewEventLog. Methods panic on a PCR index outside 0-23, which is a bug
// in the test that calls them.
type EventLogBuilder struct {
	hasLocality bool
	locality    byte
	events      []byte // TCG_PCR_EVENT2 records
}

// NewEventLog returns a builder of a log that holds only the Spec ID header.
func NewEventLog() *EventLogBuilder {
	return &EventLogBuilder{}
}

// specIDEvent is the data of the header event: TCG_EfiSpecIdEvent for spec
// version 2.0 errata 0, UINTN of 8 bytes (uintnSize 2), banks sha1 and sha256,
// no vendor info.
func specIDEvent() []byte {
	b := []byte("Spec ID Event03\x00")
	b = binary.LittleEndian.AppendUint32(b, 0) // platformClass: client
	b = append(b, 0, 2, 0, 2)                  // specVersionMinor, specVersionMajor, specErrata, uintnSize
	b = binary.LittleEndian.AppendUint32(b, 2) // numberOfAlgorithms
	b = binary.LittleEndian.AppendUint16(b, uint16(tpm2.TPMAlgSHA1))
	b = binary.LittleEndian.AppendUint16(b, sha1.Size)
	b = binary.LittleEndian.AppendUint16(b, uint16(tpm2.TPMAlgSHA256))
	b = binary.LittleEndian.AppendUint16(b, sha256.Size)
	return append(b, 0) // vendorInfoSize
}

// StartupLocality adds the EV_NO_ACTION StartupLocality event on PCR 0 (data
// "StartupLocality\0" and the locality, digests zero): the TPM was started
// at locality l, so PCR 0 starts at 00…0l. Bytes writes it right after the
// Spec ID header, where the spec requires it, whenever StartupLocality is
// called; a second call replaces the locality.
func (b *EventLogBuilder) StartupLocality(l byte) {
	b.hasLocality, b.locality = true, l
}

// Measure adds an event whose digest in each bank is the hash of data. For
// EV_NO_ACTION the digests are zero, as the spec requires, and the event
// extends nothing.
func (b *EventLogBuilder) Measure(pcr int, t verify.EventType, data []byte) {
	b.MeasureDigest(pcr, t, data, data)
}

// MeasureDigest adds an event whose digest in each bank is the hash of
// measured and whose event data is data: for events that describe what was
// measured rather than hold it (an EFI application's UEFI_IMAGE_LOAD_EVENT,
// a GRUB file's path) or hold it with decoration (GRUB measures a command
// without the "grub_cmd: " prefix of its event data). For EV_NO_ACTION the
// digests are zero.
func (b *EventLogBuilder) MeasureDigest(pcr int, t verify.EventType, measured, data []byte) {
	if pcr < 0 || pcr > 23 {
		panic(fmt.Sprintf("simulator: event log: PCR %d is out of range 0-23", pcr))
	}
	s1, s256 := make([]byte, sha1.Size), make([]byte, sha256.Size)
	if t != verify.EvNoAction {
		d1, d256 := sha1.Sum(measured), sha256.Sum256(measured)
		s1, s256 = d1[:], d256[:]
	}
	b.events = appendEvent2(b.events, uint32(pcr), t, s1, s256, data)
}

func appendEvent2(b []byte, pcr uint32, t verify.EventType, s1, s256, data []byte) []byte {
	b = binary.LittleEndian.AppendUint32(b, pcr)
	b = binary.LittleEndian.AppendUint32(b, uint32(t))
	b = binary.LittleEndian.AppendUint32(b, 2) // TPML_DIGEST_VALUES.count
	b = binary.LittleEndian.AppendUint16(b, uint16(tpm2.TPMAlgSHA1))
	b = append(b, s1...)
	b = binary.LittleEndian.AppendUint16(b, uint16(tpm2.TPMAlgSHA256))
	b = append(b, s256...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

// Bytes returns the log: the Spec ID header (a TCG_PCClientPCREvent with a
// zero SHA-1 digest), the StartupLocality event if any, then the events in
// the order they were added. The slice is the caller's.
func (b *EventLogBuilder) Bytes() []byte {
	spec := specIDEvent()
	out := binary.LittleEndian.AppendUint32(nil, 0) // PCRIndex
	out = binary.LittleEndian.AppendUint32(out, uint32(verify.EvNoAction))
	out = append(out, make([]byte, sha1.Size)...)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(spec)))
	out = append(out, spec...)
	if b.hasLocality {
		data := append([]byte("StartupLocality\x00"), b.locality)
		out = appendEvent2(out, 0, verify.EvNoAction, make([]byte, sha1.Size), make([]byte, sha256.Size), data)
	}
	return append(out, b.events...)
}

// BootConfig describes a UEFI boot for BuildBootLog. Zero fields give an
// empty measurement, not a missing one, unless said otherwise.
type BootConfig struct {
	// Firmware is the EV_S_CRTM_VERSION string on PCR 0 (UTF-16LE with a
	// NUL, as firmware logs it).
	Firmware string
	// SecureBoot is the value of the SecureBoot variable (1 byte, 0x01 or
	// 0x00). The variable is measured either way.
	SecureBoot bool
	// PK, KEK and DB are DER certificates, each put in an EFI_SIGNATURE_LIST
	// of type EFI_CERT_X509_GUID.
	PK, KEK, DB [][]byte
	// DBX are SHA-256 hashes (32 bytes each), in one EFI_SIGNATURE_LIST of
	// type EFI_CERT_SHA256_GUID.
	DBX [][]byte
	// BootApps are the EFI applications the firmware starts, in order (shim,
	// a boot loader), as EV_EFI_BOOT_SERVICES_APPLICATION on PCR 4. Their
	// digest is the hash of these bytes: a stand-in for the Authenticode
	// hash firmware measures, so any bytes will do.
	BootApps [][]byte
	// Authorities are DER certificates, each an EV_EFI_VARIABLE_AUTHORITY on
	// PCR 7 after the separator: the db entries that verified the boot apps.
	Authorities [][]byte
	// Loader is "grub", "systemd-boot", or empty for no OS loader
	// measurements.
	Loader string
	// Kernel and Initrd are the kernel (for systemd-boot, the unified kernel
	// image) and initrd bytes. Initrd is measured only by GRUB, and only if
	// not nil.
	Kernel, Initrd []byte
	// KernelPath is the kernel's path as GRUB names it ("/vmlinuz" when
	// empty).
	KernelPath string
	// Cmdline is the kernel command line, without the kernel path.
	Cmdline string
	// StartupLocality, if not 0, adds the StartupLocality event: the TPM
	// must be started at that locality (StartSWTPMAt) for the log to replay.
	StartupLocality byte
}

// GUIDs from the UEFI specification, and the SignatureOwner of every
// signature list entry BuildBootLog writes (an arbitrary GUID).
var (
	efiGlobalVariable  = guid("8be4df61-93ca-11d2-aa0d-00e098032b8c")
	efiImageSecurityDB = guid("d719b2cb-3d3a-4596-a3bc-dad00e67656f")
	efiCertX509        = guid("a5c059a1-94e4-4aa7-87b5-ab155c2bf072")
	efiCertSHA256      = guid("c1c41626-504c-4092-aca9-41f936934328")
	syntheticSigOwner  = guid("6d8f2ab0-51c3-4d4e-9b1a-706c696e7468")
)

// Made-up addresses for the firmware volume and the loaded boot apps.
const (
	firmwareVolumeBase = 0xffc00000
	bootAppLoadAddress = 0x7e000000
)

// guid encodes a GUID as UEFI stores it: the first three fields
// little-endian, the last eight bytes as written.
func guid(s string) []byte {
	u := uuid.MustParse(s)
	b := u[:]
	return []byte{b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]}
}

// utf16LE encodes s as UTF-16LE, without a NUL.
func utf16LE(s string) []byte {
	var b []byte
	for _, u := range utf16.Encode([]rune(s)) {
		b = binary.LittleEndian.AppendUint16(b, u)
	}
	return b
}

// variableData is UEFI_VARIABLE_DATA: VariableName, UnicodeNameLength (in
// characters, no NUL), VariableDataLength, UnicodeName, VariableData.
func variableData(vendor []byte, name string, data []byte) []byte {
	n := utf16LE(name)
	b := append([]byte(nil), vendor...)
	b = binary.LittleEndian.AppendUint64(b, uint64(len(n)/2))
	b = binary.LittleEndian.AppendUint64(b, uint64(len(data)))
	b = append(b, n...)
	return append(b, data...)
}

// signatureList is one EFI_SIGNATURE_LIST of sigType holding entries, each
// an EFI_SIGNATURE_DATA (owner GUID, then the entry), all of one size.
func signatureList(sigType []byte, entries [][]byte) []byte {
	size := 16 + len(entries[0])
	b := append([]byte(nil), sigType...)
	b = binary.LittleEndian.AppendUint32(b, uint32(28+len(entries)*size)) // SignatureListSize
	b = binary.LittleEndian.AppendUint32(b, 0)                            // SignatureHeaderSize
	b = binary.LittleEndian.AppendUint32(b, uint32(size))                 // SignatureSize
	for _, e := range entries {
		b = append(b, syntheticSigOwner...)
		b = append(b, e...)
	}
	return b
}

// certLists is one X.509 EFI_SIGNATURE_LIST per certificate, as firmware
// stores PK, KEK and db; nil for none.
func certLists(certs [][]byte) []byte {
	var b []byte
	for _, c := range certs {
		b = append(b, signatureList(efiCertX509, [][]byte{c})...)
	}
	return b
}

// BuildBootLog returns the event log of a UEFI boot as firmware and the boot
// loader record it, in the order EDK II firmware measures:
//
//   - the StartupLocality event, if c.StartupLocality is not 0;
//   - PCR 0: EV_S_CRTM_VERSION (c.Firmware) and EV_EFI_PLATFORM_FIRMWARE_BLOB
//     (a stand-in firmware volume derived from c.Firmware);
//   - PCR 7: EV_EFI_VARIABLE_DRIVER_CONFIG for SecureBoot, PK, KEK, db and
//     dbx, each a UEFI_VARIABLE_DATA whose digest covers the whole structure
//     (a variable with no entries has empty data, as firmware logs an unset
//     variable), then PCR 7's EV_SEPARATOR;
//   - PCR 4: EV_EFI_ACTION "Calling EFI Application from Boot Option", then
//     the EV_SEPARATOR (data 00000000) of PCRs 0-6;
//   - PCR 7: EV_EFI_VARIABLE_AUTHORITY for each of c.Authorities ("db",
//     EFI_SIGNATURE_DATA);
//   - PCR 4: EV_EFI_BOOT_SERVICES_APPLICATION for each of c.BootApps, with a
//     UEFI_IMAGE_LOAD_EVENT (no device path) as data;
//   - the loader's measurements (below).
//
// Loader "grub" follows GRUB 2.04+ (grub-core/commands/tpm.c, the "tpm"
// verifier, and grub-core/commands/efi/tpm.c): PCR 8 EV_IPL "grub_cmd: linux
// <KernelPath> <Cmdline>", PCR 9 EV_IPL with the kernel's path as data and the
// kernel's hash as digest, PCR 8 "kernel_cmdline: <KernelPath> <Cmdline>",
// and, if c.Initrd is not nil, PCR 8 "grub_cmd: initrd /initrd.img" and PCR 9
// "/initrd.img" with the initrd's hash. The digest of a PCR 8 string covers it
// without its prefix and without a NUL; the event data is the prefixed string
// with a trailing NUL (grub_tpm2_log_event logs strlen+1 bytes, and real
// Ubuntu, COS and GKE logs carry the NUL). Real GRUB also measures grub.cfg,
// its modules' lists and every other command it runs; those are left out.
//
// Loader "systemd-boot" follows systemd-stub (src/boot/measure.c,
// tpm_log_load_options): c.Kernel, the unified kernel image, is one more
// EV_EFI_BOOT_SERVICES_APPLICATION on PCR 4, and c.Cmdline, if not empty, is
// PCR 12 EV_IPL whose data and digest both cover the UTF-16LE command line
// with its NUL (strsize16). systemd's docs/TPM2_PCR_MEASUREMENTS.md says the
// digest is "without any trailing NUL bytes"; the code includes it, and this
// follows the code. The UKI's PCR 11 section measurements and systemd-boot's
// newer tagged events (PCR 1 SMBIOS, PCR 5 loader.conf) are left out.
//
// BuildBootLog panics on an unknown Loader or a DBX entry that is not 32
// bytes.
func BuildBootLog(c BootConfig) []byte {
	if c.Loader != "" && c.Loader != "grub" && c.Loader != "systemd-boot" {
		panic(fmt.Sprintf("simulator: BuildBootLog: unknown Loader %q (want grub, systemd-boot or empty)", c.Loader))
	}
	for _, h := range c.DBX {
		if len(h) != sha256.Size {
			panic(fmt.Sprintf("simulator: BuildBootLog: a DBX entry has %d bytes, want a SHA-256 hash", len(h)))
		}
	}
	b := NewEventLog()
	if c.StartupLocality != 0 {
		b.StartupLocality(c.StartupLocality)
	}
	b.Measure(0, verify.EvSCRTMVersion, append(utf16LE(c.Firmware), 0, 0))
	fv := []byte("synthetic firmware volume: " + c.Firmware)
	blob := binary.LittleEndian.AppendUint64(nil, firmwareVolumeBase)
	blob = binary.LittleEndian.AppendUint64(blob, uint64(len(fv)))
	b.MeasureDigest(0, verify.EvEFIPlatformFirmwareBlob, fv, blob)

	sb := []byte{0}
	if c.SecureBoot {
		sb[0] = 1
	}
	var dbx []byte
	if len(c.DBX) > 0 {
		dbx = signatureList(efiCertSHA256, c.DBX)
	}
	b.Measure(7, verify.EvEFIVariableDriverConfig, variableData(efiGlobalVariable, "SecureBoot", sb))
	b.Measure(7, verify.EvEFIVariableDriverConfig, variableData(efiGlobalVariable, "PK", certLists(c.PK)))
	b.Measure(7, verify.EvEFIVariableDriverConfig, variableData(efiGlobalVariable, "KEK", certLists(c.KEK)))
	b.Measure(7, verify.EvEFIVariableDriverConfig, variableData(efiImageSecurityDB, "db", certLists(c.DB)))
	b.Measure(7, verify.EvEFIVariableDriverConfig, variableData(efiImageSecurityDB, "dbx", dbx))
	separator := []byte{0, 0, 0, 0}
	b.Measure(7, verify.EvSeparator, separator)

	b.Measure(4, verify.EvEFIAction, []byte("Calling EFI Application from Boot Option"))
	for pcr := range 7 {
		b.Measure(pcr, verify.EvSeparator, separator)
	}
	for _, cert := range c.Authorities {
		sig := append(append([]byte(nil), syntheticSigOwner...), cert...)
		b.Measure(7, verify.EvEFIVariableAuthority, variableData(efiImageSecurityDB, "db", sig))
	}
	apps := c.BootApps
	if c.Loader == "systemd-boot" {
		apps = append(apps[:len(apps):len(apps)], c.Kernel)
	}
	for i, app := range apps {
		b.MeasureDigest(4, verify.EvEFIBootServicesApp, app, imageLoadEvent(uint64(bootAppLoadAddress+i<<24), len(app)))
	}

	path := c.KernelPath
	if path == "" {
		path = "/vmlinuz"
	}
	args := path
	if c.Cmdline != "" {
		args += " " + c.Cmdline
	}
	switch c.Loader {
	case "grub":
		grubString(b, "grub_cmd: ", "linux "+args)
		b.MeasureDigest(9, verify.EvIPL, c.Kernel, append([]byte(path), 0))
		grubString(b, "kernel_cmdline: ", args)
		if c.Initrd != nil {
			grubString(b, "grub_cmd: ", "initrd /initrd.img")
			b.MeasureDigest(9, verify.EvIPL, c.Initrd, []byte("/initrd.img\x00"))
		}
	case "systemd-boot":
		if c.Cmdline != "" {
			b.Measure(12, verify.EvIPL, append(utf16LE(c.Cmdline), 0, 0))
		}
	}
	return b.Bytes()
}

// grubString adds a PCR 8 string measurement as GRUB's tpm verifier does.
func grubString(b *EventLogBuilder, prefix, s string) {
	b.MeasureDigest(8, verify.EvIPL, []byte(s), []byte(prefix+s+"\x00"))
}

// imageLoadEvent is UEFI_IMAGE_LOAD_EVENT with no device path.
func imageLoadEvent(addr uint64, length int) []byte {
	b := binary.LittleEndian.AppendUint64(nil, addr)        // ImageLocationInMemory
	b = binary.LittleEndian.AppendUint64(b, uint64(length)) // ImageLengthInMemory
	b = binary.LittleEndian.AppendUint64(b, 0)              // ImageLinkTimeAddress
	return binary.LittleEndian.AppendUint64(b, 0)           // LengthOfDevicePath
}
