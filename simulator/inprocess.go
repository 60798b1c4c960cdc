package simulator

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"time"

	gtsim "github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/plinth-id/plinth/tpm"
)

// inUse makes a second OpenInProcess fail at once instead of blocking forever
// (the go-tpm-tools simulator waits for the previous user to close it).
var inUse sync.Mutex

// InProcess is the in-process TPM simulator (Microsoft's reference TPM 2.0
// compiled into this binary through go-tpm-tools) with an EK certificate.
//
// DEV/TEST ONLY. Its seeds are derived from a number stored in plain text in
// the state file, which also holds the manufacturer CA's private key: anyone
// who reads the file can impersonate the TPM and mint EK certificates. Never
// put ManufacturerCA in a production server's trust bundle.
//
// The simulator is a process-wide singleton: while one InProcess is open,
// OpenInProcess fails. Tests that use it must not run in parallel with each
// other.
type InProcess struct {
	*tpm.TPM
	// ManufacturerCA is the test manufacturer CA that signed the EK
	// certificate.
	ManufacturerCA *x509.Certificate

	once sync.Once
}

// OpenInProcess opens the in-process TPM simulator with the identity kept in
// stateFile (created 0600 when missing): the simulator seed (so the EK, the
// storage root key and so every key blob are the same on every run) and a test
// manufacturer CA (ECDSA P-256 root, its key) that certifies the ECC P-256 EK.
// The EK certificate is (re)written into NV 0x01c0000a on every open, so the
// simulator behaves like a real TPM with an EK certificate, and tpm.TPM.EK
// returns the ECC EK with it.
//
// DEV/TEST ONLY: see InProcess. The simulator needs cgo; built with
// CGO_ENABLED=0 it fails here at run time.
//
// Everything else in the simulator (PCRs, NV, saved contexts) starts empty on
// every open: the simulator is manufactured afresh each time.
func OpenInProcess(stateFile string) (*InProcess, error) {
	st, err := loadOrCreateState(stateFile)
	if err != nil {
		return nil, err
	}
	ca, caKey, err := st.ca()
	if err != nil {
		return nil, fmt.Errorf("simulator: state file %s: %w", stateFile, err)
	}
	if !inUse.TryLock() {
		return nil, errors.New("simulator: the in-process TPM simulator is already open in this process (it is a process-wide singleton): close it first")
	}
	sim, err := gtsim.GetWithFixedSeedInsecure(st.Seed)
	if err != nil {
		inUse.Unlock()
		return nil, fmt.Errorf("simulator: start the in-process TPM simulator: %w (it needs cgo and libcrypto)", err)
	}
	tr := transport.FromReadWriteCloser(sim)
	ekCert, err := provisionEKCert(tr, st, ca, caKey)
	if err == nil && !bytes.Equal(ekCert, st.EKCert) {
		st.EKCert = ekCert
		err = st.save(stateFile)
	}
	if err != nil {
		tr.Close()
		inUse.Unlock()
		return nil, err
	}
	return &InProcess{TPM: tpm.New(tr), ManufacturerCA: ca}, nil
}

// Close shuts the simulator down and lets the next OpenInProcess run.
func (s *InProcess) Close() error {
	err := errors.New("simulator: already closed")
	s.once.Do(func() {
		err = s.TPM.Close()
		inUse.Unlock()
	})
	return err
}

// ManufacturerCAPEM returns the test manufacturer CA certificate (PEM) kept in
// stateFile, creating the file if needed. Put it in a dev/test server's EK
// manufacturer CA bundle so that the in-process simulator's EK certificate
// verifies. DEV/TEST ONLY.
func ManufacturerCAPEM(stateFile string) ([]byte, error) {
	st, err := loadOrCreateState(stateFile)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: st.CACert}), nil
}

// state is the in-process simulator's identity, as stored in the state file
// (JSON; byte fields base64).
type state struct {
	Version int `json:"version"`
	// Seed derives the simulator's endorsement, storage and platform seeds.
	Seed int64 `json:"seed"`
	// CACert and CAKey (PKCS #8) are the test manufacturer CA.
	CACert []byte `json:"ca_cert"`
	CAKey  []byte `json:"ca_key"`
	// EKCert is the EK certificate issued on the first open (DER).
	EKCert []byte `json:"ek_cert,omitempty"`
}

const stateVersion = 1

func loadOrCreateState(path string) (*state, error) {
	if path == "" {
		return nil, errors.New("simulator: no state file given")
	}
	st, err := readState(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return st, err
	}
	st, err = newState()
	if err != nil {
		return nil, err
	}
	if err := st.create(path); errors.Is(err, fs.ErrExist) {
		return readState(path) // created by someone else meanwhile
	} else if err != nil {
		return nil, err
	}
	return st, nil
}

func readState(path string) (*state, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("simulator: read state file: %w", err)
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("simulator: state file %s: %w", path, err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("simulator: state file %s has version %d, want %d (delete it to start with a new simulated TPM)", path, st.Version, stateVersion)
	}
	if _, _, err := st.ca(); err != nil {
		return nil, fmt.Errorf("simulator: state file %s: %w", path, err)
	}
	return &st, nil
}

func newState() (*state, error) {
	var seed [8]byte
	if _, err := rand.Read(seed[:]); err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          randSerial(),
		Subject:               pkix.Name{Organization: []string{"Plinth"}, CommonName: "Plinth TEST TPM Manufacturer CA (DEV/TEST ONLY)"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(30, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("simulator: create test manufacturer CA: %w", err)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &state{Version: stateVersion, Seed: int64(binary.BigEndian.Uint64(seed[:])), CACert: der, CAKey: pk}, nil
}

func (st *state) ca() (*x509.Certificate, *ecdsa.PrivateKey, error) {
	cert, err := x509.ParseCertificate(st.CACert)
	if err != nil {
		return nil, nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(st.CAKey)
	if err != nil {
		return nil, nil, fmt.Errorf("parse CA key: %w", err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || !key.PublicKey.Equal(cert.PublicKey) {
		return nil, nil, errors.New("the CA key is not the CA certificate's")
	}
	return cert, key, nil
}

// create writes the state to path, failing with fs.ErrExist if path exists.
func (st *state) create(path string) error {
	tmp, err := st.writeTemp(path)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return err
		}
		return fmt.Errorf("simulator: create state file: %w", err)
	}
	return nil
}

// save replaces the state at path.
func (st *state) save(path string) error {
	tmp, err := st.writeTemp(path)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("simulator: save state file: %w", err)
	}
	return nil
}

// writeTemp writes the state to a new 0600 file next to path.
func (st *state) writeTemp(path string) (string, error) {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return "", err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".plinth-simulator-*") // mode 0600
	if err != nil {
		return "", fmt.Errorf("simulator: write state file: %w", err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("simulator: write state file: %w", err)
	}
	return f.Name(), nil
}

func randSerial() *big.Int {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return s.Add(s, big.NewInt(1))
}

// provisionEKCert derives the ECC P-256 EK, reuses the stored certificate if
// it certifies that EK with ca (else issues one), and writes it to NV
// 0x01c0000a under platform authorization, as a manufacturer would.
func provisionEKCert(tr transport.TPM, st *state, ca *x509.Certificate, caKey *ecdsa.PrivateKey) ([]byte, error) {
	cp, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHEndorsement, InPublic: tpm2.New2B(tpm2.ECCEKTemplate)}.Execute(tr)
	if err != nil {
		return nil, fmt.Errorf("simulator: create EK: %w", err)
	}
	tpm2.FlushContext{FlushHandle: cp.ObjectHandle}.Execute(tr)
	pub, err := cp.OutPublic.Contents()
	if err != nil {
		return nil, fmt.Errorf("simulator: EK public: %w", err)
	}
	ekKey, err := tpm2.Pub(*pub)
	if err != nil {
		return nil, fmt.Errorf("simulator: EK public: %w", err)
	}
	der := st.EKCert
	if c, err := x509.ParseCertificate(der); err != nil || !ekKey.(*ecdsa.PublicKey).Equal(c.PublicKey) || c.CheckSignatureFrom(ca) != nil {
		props, err := tpmProperties(tr)
		if err != nil {
			return nil, err
		}
		if der, err = issueEKCert(ekKey.(*ecdsa.PublicKey), props, ca, caKey); err != nil {
			return nil, err
		}
	}
	if err := writeNV(tr, tpm.NVIndexECCEKCert, der); err != nil {
		return nil, fmt.Errorf("simulator: write EK certificate to NV %#x: %w", uint32(tpm.NVIndexECCEKCert), err)
	}
	return der, nil
}

// TCG OIDs (TCG EK Credential Profile 2.0, section 3).
var (
	oidTPMManufacturer  = asn1.ObjectIdentifier{2, 23, 133, 2, 1}
	oidTPMModel         = asn1.ObjectIdentifier{2, 23, 133, 2, 2}
	oidTPMVersion       = asn1.ObjectIdentifier{2, 23, 133, 2, 3}
	oidTPMSpecification = asn1.ObjectIdentifier{2, 23, 133, 2, 16}
	oidEKCertificate    = asn1.ObjectIdentifier{2, 23, 133, 8, 1}

	oidSubjectAltName  = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidSubjectDirAttrs = asn1.ObjectIdentifier{2, 5, 29, 9}
)

type tpmProps struct {
	manufacturer, firmware1, level, revision uint32
	vendor                                   string
}

func tpmProperties(tr transport.TPM) (tpmProps, error) {
	r, err := tpm2.GetCapability{Capability: tpm2.TPMCapTPMProperties, Property: uint32(tpm2.TPMPTFamilyIndicator),
		PropertyCount: uint32(tpm2.TPMPTFirmwareVersion1 - tpm2.TPMPTFamilyIndicator + 1)}.Execute(tr)
	if err != nil {
		return tpmProps{}, fmt.Errorf("simulator: read TPM properties: %w", err)
	}
	l, err := r.CapabilityData.Data.TPMProperties()
	if err != nil {
		return tpmProps{}, fmt.Errorf("simulator: read TPM properties: %w", err)
	}
	p := map[tpm2.TPMPT]uint32{}
	for _, tp := range l.TPMProperty {
		p[tp.Property] = tp.Value
	}
	var vendor []byte
	for _, v := range []tpm2.TPMPT{tpm2.TPMPTVendorString1, tpm2.TPMPTVendorString2, tpm2.TPMPTVendorString3, tpm2.TPMPTVendorString4} {
		vendor = binary.BigEndian.AppendUint32(vendor, p[v])
	}
	return tpmProps{
		manufacturer: p[tpm2.TPMPTManufacturer],
		firmware1:    p[tpm2.TPMPTFirmwareVersion1],
		level:        p[tpm2.TPMPTLevel],
		revision:     p[tpm2.TPMPTRevision],
		vendor:       string(bytes.Join(bytes.Fields(bytes.Trim(vendor, "\x00")), []byte(" "))),
	}, nil
}

// issueEKCert issues an EK certificate shaped like real ones (and swtpm's):
// empty subject; a critical subjectAltName holding only a directoryName with
// the TPM manufacturer, model and version; subjectDirectoryAttributes with
// the TPM specification; EKU tcg-kp-EKCertificate; keyUsage keyAgreement (an
// ECC EK); not a CA. Go's x509.Verify rejects such a certificate (unhandled
// critical extension, incompatible key usage): the verifier must handle those
// quirks deliberately, which is the point.
func issueEKCert(ek *ecdsa.PublicKey, p tpmProps, ca *x509.Certificate, caKey *ecdsa.PrivateKey) ([]byte, error) {
	utf8 := func(s string) asn1.RawValue {
		return asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagUTF8String, Bytes: []byte(s)}
	}
	model := p.vendor
	if model == "" {
		model = "simulator"
	}
	dirName, err := asn1.Marshal(pkix.RDNSequence{
		{{Type: oidTPMManufacturer, Value: utf8(fmt.Sprintf("id:%08X", p.manufacturer))}},
		{{Type: oidTPMModel, Value: utf8(model)}},
		{{Type: oidTPMVersion, Value: utf8(fmt.Sprintf("id:%08X", p.firmware1))}},
	})
	if err != nil {
		return nil, err
	}
	san, err := asn1.Marshal([]asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: dirName}})
	if err != nil {
		return nil, err
	}
	type tpmSpec struct {
		Family   string `asn1:"utf8"`
		Level    int
		Revision int
	}
	type attribute struct {
		Type   asn1.ObjectIdentifier
		Values []tpmSpec `asn1:"set"`
	}
	sda, err := asn1.Marshal([]attribute{{Type: oidTPMSpecification, Values: []tpmSpec{{"2.0", int(p.level), int(p.revision)}}}})
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randSerial(),
		NotBefore:             time.Now().Add(-time.Hour).UTC().Truncate(time.Second),
		NotAfter:              time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC), // no well-defined expiry (RFC 5280 4.1.2.5)
		KeyUsage:              x509.KeyUsageKeyAgreement,
		UnknownExtKeyUsage:    []asn1.ObjectIdentifier{oidEKCertificate},
		BasicConstraintsValid: true,
		ExtraExtensions: []pkix.Extension{
			{Id: oidSubjectAltName, Critical: true, Value: san},
			{Id: oidSubjectDirAttrs, Value: sda},
		},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, ek, caKey)
	if err != nil {
		return nil, fmt.Errorf("simulator: issue EK certificate: %w", err)
	}
	return der, nil
}

// writeNV defines idx under platform authorization (empty in the simulator)
// with the attributes of a manufacturer's EK certificate index and writes b.
func writeNV(tr transport.TPM, idx tpm2.TPMHandle, b []byte) error {
	if _, err := (tpm2.NVReadPublic{NVIndex: idx}).Execute(tr); err == nil {
		pr, _ := tpm2.NVReadPublic{NVIndex: idx}.Execute(tr)
		if _, err := (tpm2.NVUndefineSpace{AuthHandle: tpm2.TPMRHPlatform,
			NVIndex: tpm2.NamedHandle{Handle: idx, Name: pr.NVName}}).Execute(tr); err != nil {
			return fmt.Errorf("TPM2_NV_UndefineSpace: %w", err)
		}
	}
	nvp := tpm2.TPMSNVPublic{NVIndex: idx, NameAlg: tpm2.TPMAlgSHA256, DataSize: uint16(len(b)),
		Attributes: tpm2.TPMANV{PPWrite: true, WriteDefine: true, PPRead: true, OwnerRead: true, AuthRead: true,
			NoDA: true, PlatformCreate: true, NT: tpm2.TPMNTOrdinary}}
	if _, err := (tpm2.NVDefineSpace{AuthHandle: tpm2.TPMRHPlatform, PublicInfo: tpm2.New2B(nvp)}).Execute(tr); err != nil {
		return fmt.Errorf("TPM2_NV_DefineSpace: %w", err)
	}
	const chunk = 512 // below every TPM's MAX_NV_BUFFER_SIZE
	for off := 0; off < len(b); off += chunk {
		pr, err := tpm2.NVReadPublic{NVIndex: idx}.Execute(tr) // the Name changes once WRITTEN is set
		if err != nil {
			return fmt.Errorf("TPM2_NV_ReadPublic: %w", err)
		}
		end := min(off+chunk, len(b))
		if _, err := (tpm2.NVWrite{AuthHandle: tpm2.TPMRHPlatform, NVIndex: tpm2.NamedHandle{Handle: idx, Name: pr.NVName},
			Data: tpm2.TPM2BMaxNVBuffer{Buffer: b[off:end]}, Offset: uint16(off)}).Execute(tr); err != nil {
			return fmt.Errorf("TPM2_NV_Write: %w", err)
		}
	}
	return nil
}
