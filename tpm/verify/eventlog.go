package verify

import (
	"bytes"
	"crypto"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/google/go-tpm/tpm2"
)

// EventType is a TCG PC Client event type (TCG PC Client Platform Firmware
// Profile, section 10.4.1).
type EventType uint32

// The event types this package reads or names.
const (
	EvPrebootCert              EventType = 0x00000000
	EvPostCode                 EventType = 0x00000001
	EvNoAction                 EventType = 0x00000003
	EvSeparator                EventType = 0x00000004
	EvAction                   EventType = 0x00000005
	EvEventTag                 EventType = 0x00000006
	EvSCRTMContents            EventType = 0x00000007
	EvSCRTMVersion             EventType = 0x00000008
	EvCPUMicrocode             EventType = 0x00000009
	EvPlatformConfigFlags      EventType = 0x0000000A
	EvTableOfDevices           EventType = 0x0000000B
	EvCompactHash              EventType = 0x0000000C
	EvIPL                      EventType = 0x0000000D
	EvIPLPartitionData         EventType = 0x0000000E
	EvNonhostCode              EventType = 0x0000000F
	EvNonhostConfig            EventType = 0x00000010
	EvNonhostInfo              EventType = 0x00000011
	EvOmitBootDeviceEvents     EventType = 0x00000012
	EvEFIEventBase             EventType = 0x80000000
	EvEFIVariableDriverConfig  EventType = 0x80000001
	EvEFIVariableBoot          EventType = 0x80000002
	EvEFIBootServicesApp       EventType = 0x80000003
	EvEFIBootServicesDriver    EventType = 0x80000004
	EvEFIRuntimeServicesDriver EventType = 0x80000005
	EvEFIGPTEvent              EventType = 0x80000006
	EvEFIAction                EventType = 0x80000007
	EvEFIPlatformFirmwareBlob  EventType = 0x80000008
	EvEFIHandoffTables         EventType = 0x80000009
	EvEFIPlatformFirmwareBlob2 EventType = 0x8000000A
	EvEFIHandoffTables2        EventType = 0x8000000B
	EvEFIVariableBoot2         EventType = 0x8000000C
	EvEFIHCRTMEvent            EventType = 0x80000010
	EvEFIVariableAuthority     EventType = 0x800000E0
	EvEFISPDMFirmwareBlob      EventType = 0x800000E1
	EvEFISPDMFirmwareConfig    EventType = 0x800000E2
)

var eventTypeNames = map[EventType]string{
	EvPrebootCert: "EV_PREBOOT_CERT", EvPostCode: "EV_POST_CODE", EvNoAction: "EV_NO_ACTION",
	EvSeparator: "EV_SEPARATOR", EvAction: "EV_ACTION", EvEventTag: "EV_EVENT_TAG",
	EvSCRTMContents: "EV_S_CRTM_CONTENTS", EvSCRTMVersion: "EV_S_CRTM_VERSION",
	EvCPUMicrocode: "EV_CPU_MICROCODE", EvPlatformConfigFlags: "EV_PLATFORM_CONFIG_FLAGS",
	EvTableOfDevices: "EV_TABLE_OF_DEVICES", EvCompactHash: "EV_COMPACT_HASH", EvIPL: "EV_IPL",
	EvIPLPartitionData: "EV_IPL_PARTITION_DATA", EvNonhostCode: "EV_NONHOST_CODE",
	EvNonhostConfig: "EV_NONHOST_CONFIG", EvNonhostInfo: "EV_NONHOST_INFO",
	EvOmitBootDeviceEvents: "EV_OMIT_BOOT_DEVICE_EVENTS", EvEFIEventBase: "EV_EFI_EVENT_BASE",
	EvEFIVariableDriverConfig: "EV_EFI_VARIABLE_DRIVER_CONFIG", EvEFIVariableBoot: "EV_EFI_VARIABLE_BOOT",
	EvEFIBootServicesApp: "EV_EFI_BOOT_SERVICES_APPLICATION", EvEFIBootServicesDriver: "EV_EFI_BOOT_SERVICES_DRIVER",
	EvEFIRuntimeServicesDriver: "EV_EFI_RUNTIME_SERVICES_DRIVER", EvEFIGPTEvent: "EV_EFI_GPT_EVENT",
	EvEFIAction: "EV_EFI_ACTION", EvEFIPlatformFirmwareBlob: "EV_EFI_PLATFORM_FIRMWARE_BLOB",
	EvEFIHandoffTables: "EV_EFI_HANDOFF_TABLES", EvEFIPlatformFirmwareBlob2: "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
	EvEFIHandoffTables2: "EV_EFI_HANDOFF_TABLES2", EvEFIVariableBoot2: "EV_EFI_VARIABLE_BOOT2",
	EvEFIHCRTMEvent: "EV_EFI_HCRTM_EVENT", EvEFIVariableAuthority: "EV_EFI_VARIABLE_AUTHORITY",
	EvEFISPDMFirmwareBlob: "EV_EFI_SPDM_FIRMWARE_BLOB", EvEFISPDMFirmwareConfig: "EV_EFI_SPDM_FIRMWARE_CONFIG",
}

// String is the TCG name of t, or its number in hex.
func (t EventType) String() string {
	if n, ok := eventTypeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("EV_UNKNOWN(0x%08x)", uint32(t))
}

// Limits on an event log, so that a hostile agent cannot make the server
// spend unbounded memory or time. Real firmware logs are 15-60 KiB with
// 50-400 events; a Linux IMA-free boot log never comes near these.
const (
	MaxEventLogSize = 1 << 20 // bytes
	MaxEvents       = 8192
	MaxEventData    = 256 << 10 // bytes of one event's data
)

// Digest is one bank's digest of an event.
type Digest struct {
	Alg    tpm2.TPMAlgID
	Digest []byte
}

// Event is one measurement as the log states it. Nothing in it is trusted
// until the log has replayed to a quote (see VerifyEventLog).
type Event struct {
	Seq     int // position in the log, from 0 (the Spec ID header, when present, is 0)
	PCR     int
	Type    EventType
	Digests []Digest // in the order the log lists them
	Data    []byte
}

// Digest returns the event's digest in bank alg, or nil.
func (e *Event) Digest(alg tpm2.TPMAlgID) []byte {
	for _, d := range e.Digests {
		if d.Alg == alg {
			return d.Digest
		}
	}
	return nil
}

// EventLog is a parsed TCG event log.
type EventLog struct {
	// CryptoAgile is true for a TCG_PCR_EVENT2 log (PC Client spec 2.0), false
	// for a SHA-1-only TCG_PCClientPCREvent log (spec 1.2 format).
	CryptoAgile bool
	// Banks are the digest algorithms every event carries, as the Spec ID
	// header lists them (sha1 alone for a SHA-1 log).
	Banks  []tpm2.TPMAlgID
	Events []Event
}

// specIDSignature starts the data of the Spec ID header event of a
// crypto-agile log.
var specIDSignature = []byte("Spec ID Event03\x00")

// startupLocalitySignature starts an EV_NO_ACTION event on PCR 0 that says
// at which locality the TPM was started (H-CRTM platforms start at 3).
var startupLocalitySignature = []byte("StartupLocality\x00")

// ParseEventLog parses a TCG event log in either format. It checks the
// structure only: sizes, the Spec ID header, digest sizes matching their
// algorithm. It refuses a log larger than MaxEventLogSize, with more than
// MaxEvents events, or with an event's data larger than MaxEventData, and it
// reads nothing past the end of b (firmware pads the securityfs file with
// nothing; a log with trailing bytes that do not form events is refused).
func ParseEventLog(b []byte) (*EventLog, error) {
	const check = "event log"
	if len(b) > MaxEventLogSize {
		return nil, fail(check, "%d bytes is over the limit of %d", len(b), MaxEventLogSize)
	}
	r := &reader{b: b}
	// Every log starts with a TCG_PCClientPCREvent (SHA-1 format) event; in a
	// crypto-agile log it is the EV_NO_ACTION Spec ID header.
	first, err := r.sha1Event(0)
	if err != nil {
		return nil, fail(check, "%s", err)
	}
	log := &EventLog{}
	sizes := map[tpm2.TPMAlgID]int{tpm2.TPMAlgSHA1: 20}
	if first.Type == EvNoAction && first.PCR == 0 && bytes.HasPrefix(first.Data, specIDSignature) {
		log.CryptoAgile = true
		if sizes, err = parseSpecID(first.Data); err != nil {
			return nil, fail(check, "Spec ID header event: %s", err)
		}
		first.Digests = nil // the header's SHA-1 field is zero and not a measurement
		for alg := range sizes {
			log.Banks = append(log.Banks, alg)
		}
		slices.Sort(log.Banks)
	} else {
		log.Banks = []tpm2.TPMAlgID{tpm2.TPMAlgSHA1}
	}
	log.Events = append(log.Events, *first)
	for seq := 1; !r.done(); seq++ {
		if seq >= MaxEvents {
			return nil, fail(check, "more than %d events", MaxEvents)
		}
		var e *Event
		if log.CryptoAgile {
			e, err = r.agileEvent(seq, sizes)
		} else {
			e, err = r.sha1Event(seq)
		}
		if err != nil {
			return nil, fail(check, "%s", err)
		}
		log.Events = append(log.Events, *e)
	}
	return log, nil
}

// parseSpecID reads TCG_EfiSpecIdEvent: the digest sizes of the banks every
// following event carries.
func parseSpecID(d []byte) (map[tpm2.TPMAlgID]int, error) {
	r := &reader{b: d[len(specIDSignature):]}
	var hdr struct {
		PlatformClass                   uint32
		Minor, Major, Errata, UintnSize uint8
		NumberOfAlgorithms              uint32
	}
	if err := r.read(&hdr); err != nil {
		return nil, err
	}
	if hdr.NumberOfAlgorithms == 0 || hdr.NumberOfAlgorithms > 8 {
		return nil, fmt.Errorf("%d digest algorithms (want 1-8)", hdr.NumberOfAlgorithms)
	}
	sizes := map[tpm2.TPMAlgID]int{}
	for range hdr.NumberOfAlgorithms {
		var a struct{ Alg, Size uint16 }
		if err := r.read(&a); err != nil {
			return nil, err
		}
		alg := tpm2.TPMAlgID(a.Alg)
		if want, ok := hashSize(alg); ok && want != int(a.Size) {
			return nil, fmt.Errorf("algorithm %s has digest size %d (want %d)", algName(alg), a.Size, want)
		}
		if a.Size == 0 || a.Size > 64 {
			return nil, fmt.Errorf("algorithm 0x%04x has digest size %d", a.Alg, a.Size)
		}
		if _, dup := sizes[alg]; dup {
			return nil, fmt.Errorf("algorithm %s is listed twice", algName(alg))
		}
		sizes[alg] = int(a.Size)
	}
	var vendorSize uint8
	if err := r.read(&vendorSize); err != nil {
		return nil, err
	}
	if _, err := r.bytes(int(vendorSize)); err != nil {
		return nil, err
	}
	if !r.done() {
		return nil, fmt.Errorf("%d trailing bytes", len(r.b)-r.off)
	}
	return sizes, nil
}

// hashSize is the digest size of the banks this package can replay.
func hashSize(alg tpm2.TPMAlgID) (int, bool) {
	h, ok := bankHash(alg)
	if !ok {
		return 0, false
	}
	return h.Size(), true
}

func bankHash(alg tpm2.TPMAlgID) (crypto.Hash, bool) {
	switch alg {
	case tpm2.TPMAlgSHA1:
		return crypto.SHA1, true
	case tpm2.TPMAlgSHA256:
		return crypto.SHA256, true
	case tpm2.TPMAlgSHA384:
		return crypto.SHA384, true
	case tpm2.TPMAlgSHA512:
		return crypto.SHA512, true
	}
	return 0, false
}

// reader reads little-endian TCG structures and never past its bytes.
type reader struct {
	b   []byte
	off int
}

func (r *reader) done() bool { return r.off >= len(r.b) }

func (r *reader) bytes(n int) ([]byte, error) {
	if n < 0 || n > len(r.b)-r.off {
		return nil, fmt.Errorf("truncated at byte %d (want %d more, %d left)", r.off, n, len(r.b)-r.off)
	}
	v := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return v, nil
}

func (r *reader) read(v any) error {
	b, err := r.bytes(binary.Size(v))
	if err != nil {
		return err
	}
	_, err = binary.Decode(b, binary.LittleEndian, v)
	return err
}

func (r *reader) u32() (uint32, error) {
	b, err := r.bytes(4)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

// data reads a UINT32 size and that many bytes, within MaxEventData.
func (r *reader) data(seq int) ([]byte, error) {
	n, err := r.u32()
	if err != nil {
		return nil, fmt.Errorf("event %d: %s", seq, err)
	}
	if n > MaxEventData {
		return nil, fmt.Errorf("event %d: data of %d bytes is over the limit of %d", seq, n, MaxEventData)
	}
	d, err := r.bytes(int(n))
	if err != nil {
		return nil, fmt.Errorf("event %d: %s", seq, err)
	}
	return d, nil
}

// sha1Event reads a TCG_PCClientPCREvent.
func (r *reader) sha1Event(seq int) (*Event, error) {
	var hdr struct {
		PCR, Type uint32
		Digest    [20]byte
	}
	if err := r.read(&hdr); err != nil {
		return nil, fmt.Errorf("event %d: %s", seq, err)
	}
	if hdr.PCR > 23 {
		return nil, fmt.Errorf("event %d: PCR %d is out of range", seq, hdr.PCR)
	}
	d, err := r.data(seq)
	if err != nil {
		return nil, err
	}
	return &Event{Seq: seq, PCR: int(hdr.PCR), Type: EventType(hdr.Type), Digests: []Digest{{tpm2.TPMAlgSHA1, hdr.Digest[:]}}, Data: d}, nil
}

// agileEvent reads a TCG_PCR_EVENT2: every bank of the Spec ID header,
// each once, and no other.
func (r *reader) agileEvent(seq int, sizes map[tpm2.TPMAlgID]int) (*Event, error) {
	var hdr struct{ PCR, Type, Count uint32 }
	if err := r.read(&hdr); err != nil {
		return nil, fmt.Errorf("event %d: %s", seq, err)
	}
	if hdr.PCR > 23 {
		return nil, fmt.Errorf("event %d: PCR %d is out of range", seq, hdr.PCR)
	}
	if int(hdr.Count) != len(sizes) {
		return nil, fmt.Errorf("event %d: %d digests, but the Spec ID header lists %d banks", seq, hdr.Count, len(sizes))
	}
	e := &Event{Seq: seq, PCR: int(hdr.PCR), Type: EventType(hdr.Type), Digests: make([]Digest, 0, hdr.Count)}
	for range hdr.Count {
		var a uint16
		if err := r.read(&a); err != nil {
			return nil, fmt.Errorf("event %d: %s", seq, err)
		}
		alg := tpm2.TPMAlgID(a)
		size, ok := sizes[alg]
		if !ok {
			return nil, fmt.Errorf("event %d: digest of algorithm 0x%04x, which the Spec ID header does not list", seq, a)
		}
		if e.Digest(alg) != nil {
			return nil, fmt.Errorf("event %d: two %s digests", seq, algName(alg))
		}
		d, err := r.bytes(size)
		if err != nil {
			return nil, fmt.Errorf("event %d: %s", seq, err)
		}
		e.Digests = append(e.Digests, Digest{alg, d})
	}
	d, err := r.data(seq)
	if err != nil {
		return nil, err
	}
	e.Data = d
	return e, nil
}
