package tpm

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// ActivateCredential recovers the secret a server sealed to ek and the Name of
// ak with MakeCredential (tpm2.CreateCredential): idObject and encSecret are
// the raw TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET buffers, without size
// prefixes.
//
// The TPM releases the secret only if ek is its own EK and ak is loaded in it
// with the Name the server used, which is what proves to the server that the
// AK lives in the same TPM as the EK.
func (t *TPM) ActivateCredential(ctx context.Context, ek *EK, ak *Key, idObject, encSecret []byte) ([]byte, error) {
	const op = "activate credential"
	if ek == nil {
		return nil, errors.New("tpm: activate credential: no EK given")
	}
	if err := t.lock(ctx); err != nil {
		return nil, err
	}
	defer t.unlock()

	akH, _, flushAK, err := t.load(op, ak, "AK")
	if err != nil {
		return nil, err
	}
	defer flushAK()
	ekH, ekPub, flushEK, err := t.loadEK(op, ek)
	if err != nil {
		return nil, err
	}
	defer flushEK()
	auth, err := ekAuth(ekPub)
	if err != nil {
		return nil, fmt.Errorf("tpm: activate credential: %w", err)
	}
	ac, err := tpm2.ActivateCredential{
		ActivateHandle: akH, // ADMIN role: the AK's empty password
		KeyHandle:      tpm2.AuthHandle{Handle: ekH.Handle, Name: ekH.Name, Auth: auth},
		CredentialBlob: tpm2.TPM2BIDObject{Buffer: idObject},
		Secret:         tpm2.TPM2BEncryptedSecret{Buffer: encSecret},
	}.Execute(t.tr)
	if err != nil {
		if errors.Is(err, tpm2.TPMRCIntegrity) || errors.Is(err, tpm2.TPMRCValue) ||
			errors.Is(err, tpm2.TPMRCSize) || errors.Is(err, tpm2.TPMRCECCPoint) || errors.Is(err, tpm2.TPMRCScheme) {
			return nil, fmt.Errorf("tpm: activate credential: TPM2_ActivateCredential: %w (the challenge was not made for this TPM's EK and this AK, or was damaged in transit: ask the server for a new one)", err)
		}
		return nil, cmdErr(op, "TPM2_ActivateCredential", err)
	}
	return ac.CertInfo.Buffer, nil
}

// ekAuth returns the session that satisfies the EK's USER role: a password if
// userWithAuth is set (swtpm's P-384 EK), else a policy session running
// TPM2_PolicySecret(TPM_RH_ENDORSEMENT), which is the policy of the TCG
// default EK templates.
func ekAuth(pub *tpm2.TPMTPublic) (tpm2.Session, error) {
	if pub.ObjectAttributes.UserWithAuth {
		return tpm2.PasswordAuth(nil), nil
	}
	pc, err := tpm2.NewPolicyCalculator(pub.NameAlg)
	if err != nil {
		return nil, fmt.Errorf("EK name algorithm: %w", err)
	}
	if err := (tpm2.PolicySecret{AuthHandle: tpm2.TPMRHEndorsement}).Update(pc); err != nil {
		return nil, fmt.Errorf("compute EK policy: %w", err)
	}
	if !bytes.Equal(pc.Hash().Digest, pub.AuthPolicy.Buffer) {
		return nil, errors.New("the EK's authorization policy is not PolicySecret(endorsement) and its userWithAuth is clear: this EK template is not supported")
	}
	return tpm2.Policy(pub.NameAlg, 16, func(tr transport.TPM, h tpm2.TPMISHPolicy, nonceTPM tpm2.TPM2BNonce) error {
		_, err := tpm2.PolicySecret{AuthHandle: tpm2.TPMRHEndorsement, PolicySession: h, NonceTPM: nonceTPM}.Execute(tr)
		if err != nil {
			return fmt.Errorf("TPM2_PolicySecret(endorsement): %w", err)
		}
		return nil
	}), nil
}
