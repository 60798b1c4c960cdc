package verify

import (
	"crypto/rand"
	"encoding/binary"

	"github.com/google/go-tpm/tpm2"
)

// MinSecretSize is the smallest credential secret MakeCredential accepts: a
// shorter one could be guessed instead of activated.
const MinSecretSize = 16

// MakeCredential makes the credential-activation challenge: secret,
// encrypted so that only a TPM holding ek's private key, and in which an
// object named akName is loaded, can recover it with TPM2_ActivateCredential.
// It returns the TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET contents (no
// size prefixes), to be sent to the agent as they are.
//
// ek must be a restricted decryption key with AES-CFB symmetric parameters
// (every EK template is); the seed is protected with RSA-OAEP or ECDH on
// ek's own key and derived with ek's name algorithm, so P-384 EKs with
// SHA-384 work. akName is a TPM Name (CheckAK's AK: nameAlg of SHA-256 or
// stronger, then the digest), normally ak.Name. secret must be from
// MinSecretSize bytes to the digest size of ek's name algorithm, and fresh.
//
// This binds the secret to the AK's Name, and the Name to every attribute
// of the AK: getting the secret back proves that this AK, as described,
// lives in the TPM of this EK.
func MakeCredential(ek *Public, akName, secret []byte) (idObject, encSecret []byte, err error) {
	const check = "credential"
	if ek == nil {
		return nil, nil, fail(check, "no EK public area")
	}
	a := ek.Area.ObjectAttributes
	if !a.Restricted || !a.Decrypt || a.SignEncrypt {
		return nil, nil, fail(check, "EK is not a restricted decryption key")
	}
	if err := checkName(akName); err != nil {
		return nil, nil, fail(check, "AK name is malformed: %s", err)
	}
	h, err := ek.Area.NameAlg.Hash()
	if err != nil {
		return nil, nil, fail(check, "unsupported EK name algorithm %s", algName(ek.Area.NameAlg))
	}
	if len(secret) < MinSecretSize || len(secret) > h.Size() {
		return nil, nil, fail(check, "secret has %d bytes, want %d to %d", len(secret), MinSecretSize, h.Size())
	}
	kem, err := tpm2.ImportEncapsulationKey(&ek.Area)
	if err != nil {
		return nil, nil, fail(check, "EK cannot protect a credential: %v", err)
	}
	if sym := kem.SymmetricParameters(); sym.Algorithm != tpm2.TPMAlgAES {
		return nil, nil, fail(check, "EK symmetric algorithm is %s, want AES-CFB", algName(sym.Algorithm))
	}
	idObject, encSecret, err = tpm2.CreateCredential(rand.Reader, kem, akName, secret)
	if err != nil {
		return nil, nil, fail(check, "EK cannot protect a credential: %v", err)
	}
	return idObject, encSecret, nil
}

// checkName accepts a TPM Name of an object: a 2-byte name algorithm of
// SHA-256 or stronger followed by a digest of that algorithm's size.
func checkName(name []byte) error {
	if len(name) < 2 {
		return reason("too short")
	}
	alg := tpm2.TPMAlgID(binary.BigEndian.Uint16(name))
	switch alg {
	case tpm2.TPMAlgSHA256, tpm2.TPMAlgSHA384, tpm2.TPMAlgSHA512:
	default:
		return reason("name algorithm is " + algName(alg) + ", want SHA-256 or stronger")
	}
	h, _ := alg.Hash()
	if len(name) != 2+h.Size() {
		return reason("digest length does not match its name algorithm")
	}
	return nil
}
