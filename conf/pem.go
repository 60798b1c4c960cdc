package conf

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
)

// LoadCertificates reads the PEM certificates in the file at path (other
// PEM blocks are skipped); a file with none is an error.
func LoadCertificates(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("conf: %w", err)
	}
	var certs []*x509.Certificate
	for {
		var b *pem.Block
		if b, data = pem.Decode(data); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("conf: %s holds a malformed certificate: %w", path, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("conf: %s holds no PEM certificate", path)
	}
	return certs, nil
}
