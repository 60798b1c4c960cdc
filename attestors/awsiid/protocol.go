package awsiid

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"time"
)

// Name is the attestation type on the wire, as in SPIRE.
const Name = "aws_iid"

// Version is the payload version this package speaks.
const Version = 1

// MaxPayloadSize bounds the payload the server half reads. A real document
// and its signature together are about 3 KiB.
const MaxPayloadSize = 64 << 10

// Payload is the agent's only message: the instance identity document and
// its RSA-2048 PKCS#7 signature, exactly as IMDS served them. JSON, version 1.
type Payload struct {
	V int `json:"v"`
	// Document is the bytes of /latest/dynamic/instance-identity/document.
	// The server verifies the signature over these exact bytes and parses
	// them only afterwards.
	Document string `json:"document"`
	// RSA2048 is /latest/dynamic/instance-identity/rsa2048: a base64 DER
	// PKCS#7 SignedData without PEM armor. Whitespace is ignored.
	RSA2048 string `json:"rsa2048"`
}

// DecodePayload parses a payload strictly: unknown fields, trailing data,
// another version, missing fields and payloads over MaxPayloadSize are
// refused. It does not verify anything.
func DecodePayload(b []byte) (*Payload, error) {
	if len(b) > MaxPayloadSize {
		return nil, fmt.Errorf("payload is %d bytes, over the %d-byte limit", len(b), MaxPayloadSize)
	}
	var p Payload
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("malformed payload: %v", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("malformed payload: trailing data")
	}
	if p.V != Version {
		return nil, fmt.Errorf("payload version %d is not supported (want %d)", p.V, Version)
	}
	if p.Document == "" {
		return nil, fmt.Errorf("payload has no instance identity document")
	}
	if p.RSA2048 == "" {
		return nil, fmt.Errorf("payload has no rsa2048 signature")
	}
	return &p, nil
}

// document is the part of the instance identity document Plinth reads. AWS
// adds fields over time; unknown ones are ignored (they are covered by the
// signature all the same).
type document struct {
	AccountID        string    `json:"accountId"`
	Architecture     string    `json:"architecture"`
	AvailabilityZone string    `json:"availabilityZone"`
	ImageID          string    `json:"imageId"`
	InstanceID       string    `json:"instanceId"`
	InstanceType     string    `json:"instanceType"`
	PendingTime      time.Time `json:"pendingTime"`
	PrivateIP        string    `json:"privateIp"`
	Region           string    `json:"region"`
}

// The fields that form the agent ID are checked against AWS's formats, so
// that nothing unexpected reaches a SPIFFE ID path even if a configured
// certificate signs something odd.
var (
	accountRE  = regexp.MustCompile(`^[0-9]{12}$`)
	regionRE   = regexp.MustCompile(`^[a-z]{2,4}(-[a-z]+)+-[0-9]{1,2}$`)
	instanceRE = regexp.MustCompile(`^i-[0-9a-f]{8,17}$`)
)

// parseDocument parses and checks a document. Call it only on bytes whose
// signature has been verified.
func parseDocument(b []byte) (*document, error) {
	var d document
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("instance identity document is not valid JSON: %v", err)
	}
	for _, f := range []struct {
		name, value string
		re          *regexp.Regexp
	}{
		{"accountId", d.AccountID, accountRE},
		{"region", d.Region, regionRE},
		{"instanceId", d.InstanceID, instanceRE},
	} {
		if f.value == "" {
			return nil, fmt.Errorf("instance identity document has no %s", f.name)
		}
		if !f.re.MatchString(f.value) {
			return nil, fmt.Errorf("instance identity document %s %q is malformed", f.name, f.value)
		}
	}
	return &d, nil
}
