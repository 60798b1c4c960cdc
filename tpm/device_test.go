package tpm_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport/linuxudstpm"

	"github.com/plinth-id/plinth/simulator"
	"github.com/plinth-id/plinth/tpm"
	"github.com/plinth-id/plinth/tpm/verify"
)

var (
	pcrs0to7 = []int{0, 1, 2, 3, 4, 5, 6, 7}
	sel      = verify.PCRSelection{tpm2.TPMAlgSHA1: pcrs0to7, tpm2.TPMAlgSHA256: pcrs0to7}
)

func TestEK(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := testContext(t)
		ek, err := e.TPM.EK(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](ek.Public)
		if err != nil {
			t.Fatal(err)
		}
		if pub.Type != e.EKType {
			t.Errorf("EK type = %#x, want %#x", pub.Type, e.EKType)
		}
		if ek.CertIndex != e.CertIndex || ek.Cert == nil {
			t.Fatalf("EK certificate index = %#x (%d bytes), want %#x", ek.CertIndex, len(ek.Cert), e.CertIndex)
		}
		cert, err := x509.ParseCertificate(ek.Cert) // fails if the NV padding was not trimmed
		if err != nil {
			t.Fatal(err)
		}
		key, err := tpm2.Pub(*pub)
		if err != nil {
			t.Fatal(err)
		}
		if !key.(interface{ Equal(crypto.PublicKey) bool }).Equal(cert.PublicKey) {
			t.Error("the EK certificate is not for the EK")
		}
		verifyEKCert(t, cert, e)

		again, err := e.TPM.EK(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again.Public, ek.Public) || !bytes.Equal(again.Cert, ek.Cert) {
			t.Error("a second EK read differs")
		}
	})
}

// verifyEKCert checks the chain the way the verifier must: the critical TCG
// SAN (a directoryName) is accepted knowingly and the EK EKU is required.
func verifyEKCert(t *testing.T, cert *x509.Certificate, e *env) {
	t.Helper()
	var rest []asn1.ObjectIdentifier
	for _, oid := range cert.UnhandledCriticalExtensions {
		if !oid.Equal(asn1.ObjectIdentifier{2, 5, 29, 17}) {
			rest = append(rest, oid)
		}
	}
	if len(rest) != 0 {
		t.Fatalf("unexpected critical extensions %v", rest)
	}
	c := *cert
	c.UnhandledCriticalExtensions = nil // the SAN, checked above (test only)
	if _, err := c.Verify(x509.VerifyOptions{Roots: e.Roots, Intermediates: e.Intermediates,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("EK certificate chain: %v", err)
	}
	var ekEKU bool
	for _, u := range cert.UnknownExtKeyUsage {
		ekEKU = ekEKU || u.Equal(asn1.ObjectIdentifier{2, 23, 133, 8, 1})
	}
	if !ekEKU {
		t.Error("EK certificate lacks the TCG EK EKU")
	}
}

func akAlgs(t *testing.T, f func(t *testing.T, alg tpm.AKAlg)) {
	for _, alg := range []tpm.AKAlg{tpm.AKECCP256, tpm.AKRSA2048} {
		t.Run(string(alg), func(t *testing.T) { f(t, alg) })
	}
}

func TestCreateAK(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		akAlgs(t, func(t *testing.T, alg tpm.AKAlg) {
			ak, err := e.TPM.CreateAK(testContext(t), alg)
			if err != nil {
				t.Fatal(err)
			}
			pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](ak.Public)
			if err != nil {
				t.Fatal(err)
			}
			a := pub.ObjectAttributes
			if !a.Restricted || !a.SignEncrypt || a.Decrypt || !a.FixedTPM || !a.FixedParent || !a.SensitiveDataOrigin || a.AdminWithPolicy {
				t.Errorf("AK attributes %+v", a)
			}
			wantType := map[tpm.AKAlg]tpm2.TPMAlgID{tpm.AKECCP256: tpm2.TPMAlgECC, tpm.AKRSA2048: tpm2.TPMAlgRSA}[alg]
			if pub.Type != wantType {
				t.Errorf("AK type %#x, want %#x", pub.Type, wantType)
			}
			if len(ak.Private) == 0 {
				t.Error("no private blob")
			}
		})
	})
	t.Run("unknown alg", func(t *testing.T) {
		e := inProcess(t)
		_, err := e.TPM.CreateAK(testContext(t), "dsa")
		if want := `tpm: create AK: algorithm "dsa" is not supported (use "ecc-p256" or "rsa-2048")`; err == nil || err.Error() != want {
			t.Errorf("err = %v, want %s", err, want)
		}
	})
}

// makeCredential does what the server does: seal secret to the EK and the
// AK's Name.
func makeCredential(t *testing.T, ek *tpm.EK, akPublic, secret []byte) (idObject, encSecret []byte) {
	t.Helper()
	ekPub, err := tpm2.Unmarshal[tpm2.TPMTPublic](ek.Public)
	if err != nil {
		t.Fatal(err)
	}
	kem, err := tpm2.ImportEncapsulationKey(ekPub)
	if err != nil {
		t.Fatal(err)
	}
	akPub, err := tpm2.Unmarshal[tpm2.TPMTPublic](akPublic)
	if err != nil {
		t.Fatal(err)
	}
	name, err := tpm2.ObjectName(akPub)
	if err != nil {
		t.Fatal(err)
	}
	idObject, encSecret, err = tpm2.CreateCredential(rand.Reader, kem, name.Buffer, secret)
	if err != nil {
		t.Fatal(err)
	}
	return idObject, encSecret
}

func TestActivateCredential(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := testContext(t)
		ek, err := e.TPM.EK(ctx)
		if err != nil {
			t.Fatal(err)
		}
		akAlgs(t, func(t *testing.T, alg tpm.AKAlg) {
			ak, err := e.TPM.CreateAK(ctx, alg)
			if err != nil {
				t.Fatal(err)
			}
			secret := []byte("0123456789abcdef0123456789abcdef")
			id, enc := makeCredential(t, ek, ak.Public, secret)
			got, err := e.TPM.ActivateCredential(ctx, ek, ak, id, enc)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, secret) {
				t.Fatalf("secret = %x, want %x", got, secret)
			}

			// A credential made for another AK's Name is refused.
			other, err := e.TPM.CreateAK(ctx, tpm.AKECCP256)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := e.TPM.ActivateCredential(ctx, ek, other, id, enc); err == nil ||
				!strings.Contains(err.Error(), "tpm: activate credential: TPM2_ActivateCredential: ") ||
				!strings.Contains(err.Error(), "the challenge was not made for this TPM's EK and this AK") {
				t.Errorf("activation with another AK: err = %v", err)
			}
			// A damaged secret is refused.
			bad := bytes.Clone(enc)
			bad[len(bad)/2] ^= 1
			if _, err := e.TPM.ActivateCredential(ctx, ek, ak, id, bad); err == nil {
				t.Error("activation with a damaged secret succeeded")
			}
		})
	})
}

// checkSig verifies a TPMT_SIGNATURE over msg by an AK or key public.
func checkSig(t *testing.T, public, msg, sigBytes []byte) {
	t.Helper()
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](public)
	if err != nil {
		t.Fatal(err)
	}
	key, err := tpm2.Pub(*pub)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := tpm2.Unmarshal[tpm2.TPMTSignature](sigBytes)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(msg)
	switch k := key.(type) {
	case *ecdsa.PublicKey:
		s, err := sig.Signature.ECDSA()
		if err != nil || s.Hash != tpm2.TPMAlgSHA256 {
			t.Fatalf("ECDSA signature: %v, hash %#x", err, s.Hash)
		}
		if !ecdsa.Verify(k, h[:], new(big.Int).SetBytes(s.SignatureR.Buffer), new(big.Int).SetBytes(s.SignatureS.Buffer)) {
			t.Fatal("ECDSA signature does not verify")
		}
	case *rsa.PublicKey:
		s, err := sig.Signature.RSASSA()
		if err != nil || s.Hash != tpm2.TPMAlgSHA256 {
			t.Fatalf("RSASSA signature: %v", err)
		}
		if err := rsa.VerifyPKCS1v15(k, crypto.SHA256, h[:], s.Sig.Buffer); err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatalf("key type %T", key)
	}
}

func parseAttest(t *testing.T, b []byte, typ tpm2.TPMST, nonce []byte) *tpm2.TPMSAttest {
	t.Helper()
	a, err := tpm2.Unmarshal[tpm2.TPMSAttest](b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(tpm2.Marshal(*a), b) {
		t.Error("TPMS_ATTEST does not round-trip")
	}
	if a.Magic != tpm2.TPMGeneratedValue {
		t.Errorf("magic = %#x", a.Magic)
	}
	if a.Type != typ {
		t.Errorf("type = %#x, want %#x", a.Type, typ)
	}
	if !bytes.Equal(a.ExtraData.Buffer, nonce) {
		t.Errorf("extra data = %x, want nonce %x", a.ExtraData.Buffer, nonce)
	}
	return a
}

func TestQuote(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := testContext(t)
		banks, err := e.TPM.PCRBanks(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range []tpm2.TPMAlgID{tpm2.TPMAlgSHA1, tpm2.TPMAlgSHA256} {
			if !bytes.Contains(u16s(banks), u16s([]tpm2.TPMAlgID{b})) {
				t.Fatalf("bank %#x not active in %v", b, banks)
			}
		}
		akAlgs(t, func(t *testing.T, alg tpm.AKAlg) {
			ak, err := e.TPM.CreateAK(ctx, alg)
			if err != nil {
				t.Fatal(err)
			}
			nonce := []byte("fresh nonce from the server 0001")
			attest, sig, pcrs, err := e.TPM.Quote(ctx, ak, nonce, sel)
			if err != nil {
				t.Fatal(err)
			}
			checkSig(t, ak.Public, attest, sig)
			a := parseAttest(t, attest, tpm2.TPMSTAttestQuote, nonce)
			qi, err := a.Attested.Quote()
			if err != nil {
				t.Fatal(err)
			}
			d := sha256.New()
			for _, bank := range []tpm2.TPMAlgID{tpm2.TPMAlgSHA1, tpm2.TPMAlgSHA256} {
				if len(qi.PCRSelect.PCRSelections) == 0 {
					t.Fatal("empty PCR selection in the quote")
				}
				for _, i := range pcrs0to7 {
					v, ok := pcrs[bank][i]
					if !ok {
						t.Fatalf("PCR %d of bank %#x missing", i, bank)
					}
					d.Write(v)
				}
			}
			if !bytes.Equal(d.Sum(nil), qi.PCRDigest.Buffer) {
				t.Error("the PCR digest is not sha256 over the returned values")
			}
			if len(qi.PCRSelect.PCRSelections) != 2 || qi.PCRSelect.PCRSelections[0].Hash != tpm2.TPMAlgSHA1 ||
				qi.PCRSelect.PCRSelections[1].Hash != tpm2.TPMAlgSHA256 {
				t.Errorf("quote selection %+v", qi.PCRSelect)
			}
		})
	})
}

func u16s(a []tpm2.TPMAlgID) []byte {
	var b []byte
	for _, x := range a {
		b = append(b, byte(x>>8), byte(x), 0xff)
	}
	return b
}

func TestQuoteErrors(t *testing.T) {
	e := swtpm(t)
	ctx := testContext(t)
	ak, err := e.TPM.CreateAK(ctx, tpm.AKECCP256)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		sel  verify.PCRSelection
		want string
	}{
		{"inactive bank", verify.PCRSelection{tpm2.TPMAlgSHA384: {0}},
			"tpm: read PCRs: the TPM returned no value for [sha384 [0]] (is the bank active? see PCRBanks; swtpm_setup --pcr-banks selects them)"},
		{"index", verify.PCRSelection{tpm2.TPMAlgSHA256: {24}}, "tpm: quote: PCR index out of range 0-23 in bank sha256"},
		{"bank", verify.PCRSelection{tpm2.TPMAlgAES: {0}}, "tpm: quote: PCR bank alg 0x0006 is not a hash algorithm Plinth supports"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, _, err := e.TPM.Quote(ctx, ak, []byte("n"), tc.sel)
			if err == nil || err.Error() != tc.want {
				t.Errorf("err = %v\nwant %s", err, tc.want)
			}
		})
	}
}

func TestCertify(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := testContext(t)
		ak, err := e.TPM.CreateAK(ctx, tpm.AKECCP256)
		if err != nil {
			t.Fatal(err)
		}
		key, err := e.TPM.CreateKey(ctx)
		if err != nil {
			t.Fatal(err)
		}
		kp, err := tpm2.Unmarshal[tpm2.TPMTPublic](key.Public)
		if err != nil {
			t.Fatal(err)
		}
		if a := kp.ObjectAttributes; a.Restricted || !a.SignEncrypt || a.Decrypt || !a.FixedTPM || !a.FixedParent || !a.SensitiveDataOrigin {
			t.Errorf("key attributes %+v", a)
		}
		nonce := []byte("certify nonce")
		attest, sig, err := e.TPM.Certify(ctx, key, ak, nonce)
		if err != nil {
			t.Fatal(err)
		}
		checkSig(t, ak.Public, attest, sig)
		a := parseAttest(t, attest, tpm2.TPMSTAttestCertify, nonce)
		ci, err := a.Attested.Certify()
		if err != nil {
			t.Fatal(err)
		}
		name, err := tpm2.ObjectName(kp)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(ci.Name.Buffer, name.Buffer) {
			t.Error("certified Name is not the key's")
		}
	})
}

func TestSigner(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := testContext(t)
		key, err := e.TPM.CreateKey(ctx)
		if err != nil {
			t.Fatal(err)
		}
		s, err := e.TPM.Signer(key)
		if err != nil {
			t.Fatal(err)
		}
		want, err := key.PublicKey()
		if err != nil {
			t.Fatal(err)
		}
		if !s.Public().(*ecdsa.PublicKey).Equal(want) {
			t.Fatal("Signer.Public is not the key's public part")
		}
		for i := range 3 { // the second and third restore the saved context
			d := sha256.Sum256([]byte{byte(i)})
			sig, err := s.Sign(rand.Reader, d[:], crypto.SHA256)
			if err != nil {
				t.Fatal(err)
			}
			if !ecdsa.VerifyASN1(want.(*ecdsa.PublicKey), d[:], sig) {
				t.Fatal("signature does not verify")
			}
		}
		if _, err := s.Sign(rand.Reader, []byte("short"), crypto.SHA256); err == nil ||
			err.Error() != "tpm: sign: digest has 5 bytes, want 32 for SHA-256" {
			t.Errorf("short digest: err = %v", err)
		}
		tlsHandshake(t, s)

		ak, err := e.TPM.CreateAK(ctx, tpm.AKECCP256)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.TPM.Signer(ak); err == nil {
			t.Error("Signer accepted a restricted AK")
		}
	})
}

// tlsHandshake runs a TLS 1.3 handshake whose server key is s.
func tlsHandshake(t *testing.T, s crypto.Signer) {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "agent"},
		DNSNames: []string{"agent"}, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, s.Public(), s) // self-signed by the TPM
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	srv := tls.Server(c1, &tls.Config{MinVersion: tls.VersionTLS13,
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: s}}})
	cli := tls.Client(c2, &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: "agent"})
	errc := make(chan error, 1)
	go func() { errc <- srv.Handshake() }()
	if err := cli.Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
}

func TestExtend(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := testContext(t)
		s := verify.PCRSelection{tpm2.TPMAlgSHA1: {10}, tpm2.TPMAlgSHA256: {10}}
		before, err := e.TPM.ReadPCRs(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		d1 := bytes.Repeat([]byte{1}, 20)
		d256 := bytes.Repeat([]byte{2}, 32)
		if err := e.TPM.Extend(ctx, 10, map[tpm2.TPMAlgID][]byte{tpm2.TPMAlgSHA1: d1, tpm2.TPMAlgSHA256: d256}); err != nil {
			t.Fatal(err)
		}
		after, err := e.TPM.ReadPCRs(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		for bank, d := range map[tpm2.TPMAlgID][]byte{tpm2.TPMAlgSHA1: d1, tpm2.TPMAlgSHA256: d256} {
			h, _ := bank.Hash()
			w := h.New()
			w.Write(before[bank][10])
			w.Write(d)
			if !bytes.Equal(after[bank][10], w.Sum(nil)) {
				t.Errorf("bank %#x: PCR 10 = %x, want H(old || digest)", bank, after[bank][10])
			}
		}
		err = e.TPM.Extend(ctx, 10, map[tpm2.TPMAlgID][]byte{tpm2.TPMAlgSHA256: d1})
		if want := "tpm: extend PCR 10: sha256 digest has 20 bytes, want 32"; err == nil || err.Error() != want {
			t.Errorf("err = %v, want %s", err, want)
		}
	})
}

// TestReadManyPCRs reads more than the 8 values one TPM2_PCR_Read returns.
func TestReadManyPCRs(t *testing.T) {
	e := swtpm(t)
	all := make([]int, 24)
	for i := range all {
		all[i] = i
	}
	v, err := e.TPM.ReadPCRs(testContext(t), verify.PCRSelection{tpm2.TPMAlgSHA1: all, tpm2.TPMAlgSHA256: all})
	if err != nil {
		t.Fatal(err)
	}
	if len(v[tpm2.TPMAlgSHA1]) != 24 || len(v[tpm2.TPMAlgSHA256]) != 24 {
		t.Fatalf("got %d sha1 and %d sha256 values", len(v[tpm2.TPMAlgSHA1]), len(v[tpm2.TPMAlgSHA256]))
	}
}

func TestInfo(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		info, err := e.TPM.Info(testContext(t))
		if err != nil {
			t.Fatal(err)
		}
		if info.Manufacturer == "" || info.FirmwareVersion == "" {
			t.Errorf("info %+v", info)
		}
		t.Logf("%+v", info)
	})
}

// TestConcurrent uses one TPM from several goroutines: every multi-command
// operation must run alone, or handles would be flushed under another's feet
// (and the simulator would run out of its 3 object slots).
func TestConcurrent(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := testContext(t)
		ak, err := e.TPM.CreateAK(ctx, tpm.AKECCP256)
		if err != nil {
			t.Fatal(err)
		}
		key, err := e.TPM.CreateKey(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ek, err := e.TPM.EK(ctx)
		if err != nil {
			t.Fatal(err)
		}
		s, err := e.TPM.Signer(key)
		if err != nil {
			t.Fatal(err)
		}
		secret := []byte("concurrent secret")
		id, enc := makeCredential(t, ek, ak.Public, secret)
		ops := []func() error{
			func() error { _, _, _, err := e.TPM.Quote(ctx, ak, []byte("n"), sel); return err },
			func() error { _, _, err := e.TPM.Certify(ctx, key, ak, []byte("n")); return err },
			func() error {
				d := sha256.Sum256(nil)
				_, err := s.Sign(nil, d[:], crypto.SHA256)
				return err
			},
			func() error {
				got, err := e.TPM.ActivateCredential(ctx, ek, ak, id, enc)
				if err == nil && !bytes.Equal(got, secret) {
					err = errors.New("wrong secret")
				}
				return err
			},
			func() error { _, err := e.TPM.ReadPCRs(ctx, sel); return err },
			func() error { _, err := e.TPM.CreateKey(ctx); return err },
		}
		var wg sync.WaitGroup
		errc := make(chan error, 4*len(ops))
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range ops {
					if err := ops[(g+i)%len(ops)](); err != nil {
						errc <- err
					}
				}
			}()
		}
		wg.Wait()
		close(errc)
		for err := range errc {
			t.Error(err)
		}
	})
}

// TestPersist stores key blobs in files, reopens the TPM (a reboot), and
// uses them again.
func TestPersist(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := testContext(t)
		dir := t.TempDir()
		ek, err := e.TPM.EK(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ak, err := e.TPM.CreateAK(ctx, tpm.AKECCP256)
		if err != nil {
			t.Fatal(err)
		}
		key, err := e.TPM.CreateKey(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for name, k := range map[string]*tpm.Key{"ak": ak, "key": key} {
			b, err := k.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}

		e.Reopen(t)

		load := func(name string) *tpm.Key {
			b, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			var k tpm.Key
			if err := k.UnmarshalBinary(b); err != nil {
				t.Fatal(err)
			}
			return &k
		}
		ak2, key2 := load("ak"), load("key")
		ek2, err := e.TPM.EK(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(ek2.Public, ek.Public) {
			t.Fatal("the EK changed across a reopen")
		}
		attest, sig, _, err := e.TPM.Quote(ctx, ak2, []byte("after reboot"), sel)
		if err != nil {
			t.Fatal(err)
		}
		checkSig(t, ak.Public, attest, sig)
		s, err := e.TPM.Signer(key2)
		if err != nil {
			t.Fatal(err)
		}
		d := sha256.Sum256([]byte("after reboot"))
		sig, err = s.Sign(rand.Reader, d[:], crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		pk, _ := key.PublicKey()
		if !ecdsa.VerifyASN1(pk.(*ecdsa.PublicKey), d[:], sig) {
			t.Error("signature after reopen does not verify")
		}
		secret := []byte("after reboot")
		id, enc := makeCredential(t, ek2, ak2.Public, secret)
		if got, err := e.TPM.ActivateCredential(ctx, ek2, ak2, id, enc); err != nil || !bytes.Equal(got, secret) {
			t.Errorf("activation after reopen: %x, %v", got, err)
		}
	})
}

// TestForeignKey loads a key blob made by another TPM.
func TestForeignKey(t *testing.T) {
	ctx := testContext(t)
	var key *tpm.Key
	{
		e := inProcess(t)
		var err error
		if key, err = e.TPM.CreateKey(ctx); err != nil {
			t.Fatal(err)
		}
	}
	e := swtpm(t)
	s, err := e.TPM.Signer(key)
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256(nil)
	_, err = s.Sign(nil, d[:], crypto.SHA256)
	if err == nil || !strings.HasPrefix(err.Error(), "tpm: sign: TPM2_Load(key): ") ||
		!strings.HasSuffix(err.Error(), "(the key blob was not created by this TPM, is corrupt, or the TPM owner hierarchy was cleared: delete the stored key so that it is created again)") {
		t.Errorf("err = %v", err)
	}
}

func TestClosed(t *testing.T) {
	e := swtpm(t)
	if err := e.TPM.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.TPM.EK(testContext(t)); !errors.Is(err, tpm.ErrClosed) {
		t.Errorf("err = %v, want ErrClosed", err)
	}
}

func TestOpenSocketErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "none.sock")
	_, err := tpm.OpenSocket("unix", path)
	if err == nil || !strings.HasPrefix(err.Error(), "tpm: open socket unix "+path+": ") {
		t.Errorf("err = %v", err)
	}
	if _, err := tpm.OpenSocket("udp", "x"); err == nil || err.Error() != `tpm: open socket: network "udp" is not supported (use unix or tcp)` {
		t.Errorf("err = %v", err)
	}
	if _, err := tpm.OpenDevice(filepath.Join(t.TempDir(), "tpmrm0")); err == nil || !strings.HasPrefix(err.Error(), "tpm: open device ") {
		t.Errorf("err = %v", err)
	}
}

func TestLockHonoursContext(t *testing.T) {
	e := swtpm(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := e.TPM.EK(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

// TestOpenSocketFlushesLeftovers leaves a transient object in swtpm (as a
// crashed client would) and checks that the next OpenSocket flushes it.
func TestOpenSocketFlushesLeftovers(t *testing.T) {
	if swtpmState == nil {
		t.Skip("swtpm is not installed")
	}
	sw, err := simulator.StartSWTPM(testContext(t), swtpmState, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer sw.Stop()
	raw, err := linuxudstpm.Open(sw.Socket) // dials per command
	if err != nil {
		t.Fatal(err)
	}
	transients := func() int {
		r, err := tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: 0x80000000, PropertyCount: 64}.Execute(raw)
		if err != nil {
			t.Fatal(err)
		}
		h, _ := r.CapabilityData.Data.Handles()
		return len(h.Handle)
	}
	if _, err := (tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(tpm2.ECCSRKTemplate)}).Execute(raw); err != nil {
		t.Fatal(err)
	}
	if n := transients(); n != 1 {
		t.Fatalf("%d transient objects before OpenSocket, want 1", n)
	}
	tp, err := sw.Open()
	if err != nil {
		t.Fatal(err)
	}
	tp.Close()
	if n := transients(); n != 0 {
		t.Errorf("%d transient objects after OpenSocket, want 0", n)
	}
}

// TestEKP384 removes swtpm's RSA EK certificate, so that EK picks swtpm's ECC
// P-384 EK (SHA-384 name algorithm, userWithAuth set), and activates a
// credential with it.
func TestEKP384(t *testing.T) {
	if swtpmState == nil {
		t.Skip("swtpm is not installed")
	}
	ctx := testContext(t)
	sw, err := simulator.StartSWTPM(ctx, swtpmState, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer sw.Stop()
	raw, err := linuxudstpm.Open(sw.Socket)
	if err != nil {
		t.Fatal(err)
	}
	pr, err := tpm2.NVReadPublic{NVIndex: tpm.NVIndexRSAEKCert}.Execute(raw)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (tpm2.NVUndefineSpace{AuthHandle: tpm2.TPMRHPlatform,
		NVIndex: tpm2.NamedHandle{Handle: tpm.NVIndexRSAEKCert, Name: pr.NVName}}).Execute(raw); err != nil {
		t.Fatal(err)
	}
	tp, err := sw.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	ek, err := tp.EK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ek.CertIndex != tpm.NVIndexECCP384EKCert {
		t.Fatalf("EK certificate from %#x, want the P-384 index", ek.CertIndex)
	}
	pub, _ := tpm2.Unmarshal[tpm2.TPMTPublic](ek.Public)
	if p, err := pub.Parameters.ECCDetail(); err != nil || p.CurveID != tpm2.TPMECCNistP384 {
		t.Fatalf("EK curve: %v", err)
	}
	ak, err := tp.CreateAK(ctx, tpm.AKECCP256)
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("p-384 secret")
	id, enc := makeCredential(t, ek, ak.Public, secret)
	got, err := tp.ActivateCredential(ctx, ek, ak, id, enc)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("activation: %x, %v", got, err)
	}
}

// TestEKWithoutCertificate removes every EK certificate and the persistent
// RSA EK from swtpm: EK must fall back to the RSA EK from the default
// template, without a certificate, and it must still activate credentials.
func TestEKWithoutCertificate(t *testing.T) {
	if swtpmState == nil {
		t.Skip("swtpm is not installed")
	}
	ctx := testContext(t)
	sw, err := simulator.StartSWTPM(ctx, swtpmState, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer sw.Stop()
	raw, err := linuxudstpm.Open(sw.Socket)
	if err != nil {
		t.Fatal(err)
	}
	for _, idx := range []tpm2.TPMHandle{tpm.NVIndexRSAEKCert, tpm.NVIndexECCP384EKCert} {
		pr, err := tpm2.NVReadPublic{NVIndex: idx}.Execute(raw)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := (tpm2.NVUndefineSpace{AuthHandle: tpm2.TPMRHPlatform,
			NVIndex: tpm2.NamedHandle{Handle: idx, Name: pr.NVName}}).Execute(raw); err != nil {
			t.Fatal(err)
		}
	}
	rp, err := tpm2.ReadPublic{ObjectHandle: tpm.PersistentRSAEK}.Execute(raw)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (tpm2.EvictControl{Auth: tpm2.TPMRHOwner, ObjectHandle: tpm2.NamedHandle{Handle: tpm.PersistentRSAEK, Name: rp.Name},
		PersistentHandle: tpm.PersistentRSAEK}).Execute(raw); err != nil {
		t.Fatal(err)
	}
	tp, err := sw.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	ek, err := tp.EK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ek.Cert != nil || ek.CertIndex != 0 {
		t.Errorf("EK certificate %d bytes from %#x, want none", len(ek.Cert), ek.CertIndex)
	}
	if !bytes.Equal(ek.Public, rp.OutPublic.Bytes()) {
		t.Error("the RSA EK from the template is not swtpm's RSA EK")
	}
	ak, err := tp.CreateAK(ctx, tpm.AKECCP256)
	if err != nil {
		t.Fatal(err)
	}
	id, enc := makeCredential(t, ek, ak.Public, []byte("no cert"))
	if got, err := tp.ActivateCredential(ctx, ek, ak, id, enc); err != nil || string(got) != "no cert" {
		t.Fatalf("activation: %q, %v", got, err)
	}
}
