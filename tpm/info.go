package tpm

import (
	"context"
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/google/go-tpm/tpm2"
)

// Info describes a TPM as it reports itself. Nothing here is authenticated:
// it is for logs and selectors that say "reported by the node", never for
// trust decisions (the EK certificate is what a manufacturer vouches for).
type Info struct {
	// Manufacturer is TPM_PT_MANUFACTURER as text, e.g. "IBM", "MSFT",
	// "IFX", "STM", "INTC".
	Manufacturer string
	// ManufacturerID is TPM_PT_MANUFACTURER as a number (TCG vendor ID), as
	// EK certificates write it ("id:%08X").
	ManufacturerID uint32
	// Vendor is TPM_PT_VENDOR_STRING_1..4, e.g. "SW TPM" for swtpm.
	Vendor string
	// FirmwareVersion is TPM_PT_FIRMWARE_VERSION_1 and _2 as four 16-bit
	// numbers, "major.minor.x.y" (e.g. "7.85.4555.0" on an Infineon chip).
	FirmwareVersion string
	// FirmwareVersion1 and FirmwareVersion2 are the raw properties.
	FirmwareVersion1, FirmwareVersion2 uint32
}

// Info reads the TPM's manufacturer and firmware properties.
func (t *TPM) Info(ctx context.Context) (*Info, error) {
	if err := t.lock(ctx); err != nil {
		return nil, err
	}
	defer t.unlock()
	first := tpm2.TPMPTManufacturer
	r, err := tpm2.GetCapability{Capability: tpm2.TPMCapTPMProperties, Property: uint32(first),
		PropertyCount: uint32(tpm2.TPMPTFirmwareVersion2 - first + 1)}.Execute(t.tr)
	if err != nil {
		return nil, cmdErr("read TPM info", "TPM2_GetCapability(TPM properties)", err)
	}
	props, err := r.CapabilityData.Data.TPMProperties()
	if err != nil {
		return nil, fmt.Errorf("tpm: read TPM info: %w", err)
	}
	p := map[tpm2.TPMPT]uint32{}
	for _, tp := range props.TPMProperty {
		p[tp.Property] = tp.Value
	}
	str := func(ids ...tpm2.TPMPT) string {
		var b []byte
		for _, id := range ids {
			b = binary.BigEndian.AppendUint32(b, p[id])
		}
		return strings.Join(strings.Fields(strings.Map(func(r rune) rune {
			if r < 0x20 || r > 0x7e {
				return -1
			}
			return r
		}, string(b))), " ")
	}
	f1, f2 := p[tpm2.TPMPTFirmwareVersion1], p[tpm2.TPMPTFirmwareVersion2]
	return &Info{
		Manufacturer:     str(tpm2.TPMPTManufacturer),
		ManufacturerID:   p[tpm2.TPMPTManufacturer],
		Vendor:           str(tpm2.TPMPTVendorString1, tpm2.TPMPTVendorString2, tpm2.TPMPTVendorString3, tpm2.TPMPTVendorString4),
		FirmwareVersion:  fmt.Sprintf("%d.%d.%d.%d", f1>>16, f1&0xffff, f2>>16, f2&0xffff),
		FirmwareVersion1: f1,
		FirmwareVersion2: f2,
	}, nil
}
