package tpm

import (
	"fmt"
	"os"
)

// DefaultEventLogPath is where Linux exposes the firmware's TCG event log.
const DefaultEventLogPath = "/sys/kernel/security/tpm0/binary_bios_measurements"

// ReadEventLog reads the measured-boot event log at path (DefaultEventLogPath
// when empty). The log is evidence the verifier replays against a quote; it
// is not parsed here.
func ReadEventLog(path string) ([]byte, error) {
	if path == "" {
		path = DefaultEventLogPath
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tpm: could not read the event log %s (securityfs must be mounted and readable, usually by root): %w", path, err)
	}
	if len(b) == 0 {
		return nil, fmt.Errorf("tpm: the event log %s is empty", path)
	}
	return b, nil
}
