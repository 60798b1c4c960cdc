package awsiid

import (
	"context"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/plinth-id/plinth/attestors"
	"github.com/smallstep/pkcs7"
)

// capturedRSA2048 is a real /latest/dynamic/instance-identity/rsa2048
// signature from an m4.large in us-east-1 (2017-12-29), published as a test
// fixture in a public repository. It is BER with indefinite lengths, carries
// the document as its content, SHA-256, signed attributes (content type,
// signing time, message digest) and no certificates: the format IMDS serves.
const capturedRSA2048 = "MIAGCSqGSIb3DQEHAqCAMIACAQExDzANBglghkgBZQMEAgEFADCABgkqhkiG9w0BBwGggCSABIIB1HsKICAiYXZhaWxhYmlsaXR5Wm9uZSIgOiAidXMtZWFzdC0xZSIsCiAgImRldnBheVByb2R1Y3RDb2RlcyIgOiBudWxsLAogICJtYXJrZXRwbGFjZVByb2R1Y3RDb2RlcyIgOiBudWxsLAogICJ2ZXJzaW9uIiA6ICIyMDE3LTA5LTMwIiwKICAiaW5zdGFuY2VJZCIgOiAiaS0wNTU5NTBiOWNmYmNlMGNlMyIsCiAgImJpbGxpbmdQcm9kdWN0cyIgOiBudWxsLAogICJpbnN0YW5jZVR5cGUiIDogIm00LmxhcmdlIiwKICAicGVuZGluZ1RpbWUiIDogIjIwMTctMTItMjlUMDU6MzQ6MDdaIiwKICAicHJpdmF0ZUlwIiA6ICIxMDAuNjYuMzkuMTU0IiwKICAiYWNjb3VudElkIiA6ICIxNzk3MjcxMDExOTQiLAogICJhcmNoaXRlY3R1cmUiIDogIng4Nl82NCIsCiAgImtlcm5lbElkIiA6IG51bGwsCiAgInJhbWRpc2tJZCIgOiBudWxsLAogICJpbWFnZUlkIiA6ICJhbWktZWExNjU5OTAiLAogICJyZWdpb24iIDogInVzLWVhc3QtMSIKfQAAAAAAADGCAf8wggH7AgEBMGkwXDELMAkGA1UEBhMCVVMxGTAXBgNVBAgTEFdhc2hpbmd0b24gU3RhdGUxEDAOBgNVBAcTB1NlYXR0bGUxIDAeBgNVBAoTF0FtYXpvbiBXZWIgU2VydmljZXMgTExDAgkAsWnMQBVZpBkwDQYJYIZIAWUDBAIBBQCgaTAYBgkqhkiG9w0BCQMxCwYJKoZIhvcNAQcBMBwGCSqGSIb3DQEJBTEPFw0xNzEyMjkwNTM0MTJaMC8GCSqGSIb3DQEJBDEiBCAnRmg+lfohgYY+mmmARsuY+eDhZnxkqSnq3QFOzB0N2jANBgkqhkiG9w0BAQEFAASCAQB8huDo5kOLVGKjGeT3EfK43by0SqS3FThw2VIL4dnFf1OV3c53DT2YjIq4nf9IXFCuE51ch7TLsY9TWTGbLr+U1UF9Y6sahEAfJpp3Vk4KyMwuiELm0/glExksUMgy51tOOAqOMXwoHPBKtnWx9ZVSmv/KUrU3R3armHBrUrcOdZxF2OMPIanWyTJ3aO1uPX4LZOTS/vnM792ED1YlZ1bKl8iu1U0WXEKqc4arkmeqvDhvIs2cg4EKr4QE103dAGCSZzRd+IKd6ZiKivcZP4ul1006IJSrAP0VK4N+PS0bw9xzacMOPPdeP/JiGYlCiiT2tSXwNWB/nKeeSDyPoa4YAAAAAAAA"

// capturedDocument is the document that signature covers, byte for byte.
const capturedDocument = `{
  "availabilityZone" : "us-east-1e",
  "devpayProductCodes" : null,
  "marketplaceProductCodes" : null,
  "version" : "2017-09-30",
  "instanceId" : "i-055950b9cfbce0ce3",
  "billingProducts" : null,
  "instanceType" : "m4.large",
  "pendingTime" : "2017-12-29T05:34:07Z",
  "privateIp" : "100.66.39.154",
  "accountId" : "179727101194",
  "architecture" : "x86_64",
  "kernelId" : null,
  "ramdiskId" : null,
  "imageId" : "ami-ea165990",
  "region" : "us-east-1"
}`

// TestCapturedDocument verifies a real AWS document with the shipped
// certificates only.
func TestCapturedDocument(t *testing.T) {
	pending := time.Date(2017, 12, 29, 5, 34, 7, 0, time.UTC)
	s := newServer(t, ServerConfig{
		Accounts:       []string{"179727101194"},
		Regions:        []string{"us-east-1"},
		MaxInstanceAge: time.Hour,
		Clock:          fixedClock(pending.Add(10 * time.Minute)),
	})
	res, err := s.Attest(context.Background(), payload(t, []byte(capturedDocument), capturedRSA2048), nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := "spiffe://example.org/spire/agent/aws_iid/179727101194/us-east-1/i-055950b9cfbce0ce3"; res.AgentID.String() != want {
		t.Errorf("agent ID = %s, want %s", res.AgentID, want)
	}
	want := []string{
		"aws_iid:account:179727101194",
		"aws_iid:az:us-east-1e",
		"aws_iid:image:id:ami-ea165990",
		"aws_iid:instance:id:i-055950b9cfbce0ce3",
		"aws_iid:instance:type:m4.large",
		"aws_iid:region:us-east-1",
	}
	if got := selectorStrings(res.Selectors); !slices.Equal(got, want) {
		t.Errorf("selectors = %v, want %v", got, want)
	}
	if res.Evidence["signer"] != "AWS us-east-1 certificate" {
		t.Errorf("signer = %q", res.Evidence["signer"])
	}

	// IMDS serves the signature in 64-column lines; whitespace is ignored.
	wrapped := ""
	for s := capturedRSA2048; s != ""; {
		n := min(64, len(s))
		wrapped, s = wrapped+s[:n]+"\n", s[n:]
	}
	if _, err := s.Attest(context.Background(), payload(t, []byte(capturedDocument), wrapped), nil); err != nil {
		t.Errorf("wrapped signature: %v", err)
	}

	rejects := map[string]struct {
		doc, sig string
		cfg      ServerConfig
		want     string
	}{
		"trailing newline added to the document": {
			doc: capturedDocument + "\n", sig: capturedRSA2048,
			want: "the PKCS#7 signs a different document than the one presented",
		},
		"another account claimed": {
			doc: strings.Replace(capturedDocument, "179727101194", "123456789012", 1), sig: capturedRSA2048,
			want: "the PKCS#7 signs a different document than the one presented",
		},
		"too old today": {
			doc: capturedDocument, sig: capturedRSA2048,
			cfg:  ServerConfig{MaxInstanceAge: 24 * time.Hour, Clock: fixedClock(pending.Add(25 * time.Hour))},
			want: "instance i-055950b9cfbce0ce3 is too old: pending since 2017-12-29T05:34:07Z (25h0m0s ago), max_instance_age is 24h0m0s",
		},
	}
	for name, tc := range rejects {
		t.Run(name, func(t *testing.T) {
			s := newServer(t, tc.cfg)
			_, err := s.Attest(context.Background(), payload(t, []byte(tc.doc), tc.sig), nil)
			if !errors.Is(err, attestors.ErrRejected) || err.Error() != "attestation rejected: "+tc.want {
				t.Fatalf("err = %v, want %s", err, tc.want)
			}
		})
	}
}

// TestForgedAWSSigner is the Azure-class attack against the shipped
// certificates: a forged document whose PKCS#7 names AWS's us-east-1 issuer
// and serial and embeds a self-made certificate with that name and serial.
func TestForgedAWSSigner(t *testing.T) {
	use1 := AWSCertificates()["us-east-1"]
	forger := newTestKey(t, 1, use1.RawSubject, use1.SerialNumber)
	doc := []byte(strings.Replace(capturedDocument, "179727101194", "123456789012", 1))
	s := newServer(t, ServerConfig{})
	_, err := s.Attest(context.Background(), payload(t, doc, forger.sign(t, doc, signOpts{})), nil)
	want := `attestation rejected: signed by an untrusted key: the signature does not verify with the AWS us-east-1 certificate (serial b169cc401559a419): crypto/rsa: verification error`
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v\nwant %s", err, want)
	}
}

// TestShippedCertificates checks the embedded file: every certificate is
// AWS's self-signed RSA-2048 certificate (a transcription error breaks the
// self-signature), one per region, valid until the 2190s or later.
func TestShippedCertificates(t *testing.T) {
	certs := AWSCertificates()
	if n := len(certs); n != 39 {
		t.Errorf("%d shipped certificates, want 39", n)
	}
	for _, r := range []string{"us-east-1", "us-east-2", "us-west-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-northeast-1", "cn-north-1", "us-gov-west-1", "eusc-de-east-1"} {
		if certs[r] == nil {
			t.Errorf("no certificate for %s", r)
		}
	}
	serials := map[string]string{}
	for region, c := range certs {
		if err := c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature); err != nil {
			t.Errorf("%s: self-signature does not verify: %v", region, err)
		}
		if k, ok := c.PublicKey.(*rsa.PublicKey); !ok || k.N.BitLen() != 2048 {
			t.Errorf("%s: not an RSA-2048 key", region)
		}
		if c.Subject.String() != "O=Amazon Web Services LLC,L=Seattle,ST=Washington State,C=US" || c.Issuer.String() != c.Subject.String() {
			t.Errorf("%s: subject %s issuer %s", region, c.Subject, c.Issuer)
		}
		if c.NotAfter.Year() < 2195 {
			t.Errorf("%s: expires %s", region, c.NotAfter)
		}
		if other, dup := serials[c.SerialNumber.String()]; dup {
			t.Errorf("%s and %s share serial %x", region, other, c.SerialNumber)
		}
		serials[c.SerialNumber.String()] = region
	}
	if got := certs["us-east-1"].SerialNumber; got.Cmp(new(big.Int).SetBytes([]byte{0xb1, 0x69, 0xcc, 0x40, 0x15, 0x59, 0xa4, 0x19})) != 0 {
		t.Errorf("us-east-1 serial %x", got)
	}
	// AWSCertificates returns a fresh map each time.
	delete(certs, "us-east-1")
	if AWSCertificates()["us-east-1"] == nil {
		t.Error("AWSCertificates shares its map")
	}
}

// TestCapturedSignatureShape documents what a real IMDS signature contains,
// which the simulator imitates.
func TestCapturedSignatureShape(t *testing.T) {
	der, err := base64.StdEncoding.DecodeString(capturedRSA2048)
	if err != nil {
		t.Fatal(err)
	}
	p7, err := pkcs7.Parse(der)
	if err != nil {
		t.Fatal(err)
	}
	if len(p7.Certificates) != 0 || len(p7.Signers) != 1 || string(p7.Content) != capturedDocument {
		t.Fatalf("certificates %d, signers %d, content %q", len(p7.Certificates), len(p7.Signers), p7.Content)
	}
	if !p7.Signers[0].DigestAlgorithm.Algorithm.Equal(pkcs7.OIDDigestAlgorithmSHA256) {
		t.Errorf("digest %s", p7.Signers[0].DigestAlgorithm.Algorithm)
	}
	var signingTime time.Time
	if err := p7.UnmarshalSignedAttribute(pkcs7.OIDAttributeSigningTime, &signingTime); err != nil || !signingTime.Equal(time.Date(2017, 12, 29, 5, 34, 12, 0, time.UTC)) {
		t.Errorf("signing time %s, %v", signingTime, err)
	}
}
