package awskms

import (
	"context"
	"crypto"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/plinth-id/plinth/hsm"
	"github.com/plinth-id/plinth/hsm/internal/softkey"
)

var _ hsm.Key = (*Key)(nil)

// Key is a signing key in KMS. It implements hsm.Key and is safe for
// concurrent use. It names its KMS key by ARN, so it goes on signing with
// that key after GenerateKey moves the alias, until the key is deleted.
type Key struct {
	m   *Manager
	id  string
	typ hsm.KeyType
	arn string
	pub crypto.PublicKey // *ecdsa.PublicKey or *rsa.PublicKey
}

// ID returns the key's ID.
func (k *Key) ID() string { return k.id }

// Type returns the key's type.
func (k *Key) Type() hsm.KeyType { return k.typ }

// Public returns the key's public half, an *ecdsa.PublicKey or an
// *rsa.PublicKey, as KMS returned it when the key was found.
func (k *Key) Public() crypto.PublicKey { return k.pub }

// Sign is SignContext with a context that times out after 30 seconds; rand
// is not used, KMS has its own.
func (k *Key) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	return k.SignContext(ctx, digest, opts)
}

// SignContext signs digest, the hash of a message by opts.HashFunc() (SHA-256,
// SHA-384 or SHA-512), with one kms:Sign call of MessageType DIGEST: ECDSA
// for an EC key, PKCS #1 v1.5 for an RSA key, or PSS with a salt as long as
// the hash if opts is an *rsa.PSSOptions. It returns an error wrapping
// hsm.ErrNotFound if the KMS key is pending deletion or deleted.
func (k *Key) SignContext(ctx context.Context, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	alg, msg, err := k.algorithm(digest, opts)
	if err != nil {
		return nil, fmt.Errorf("awskms: could not sign with key %q: %w", k.id, err)
	}
	out, err := k.m.client.Sign(ctx, &kms.SignInput{
		KeyId:            aws.String(k.arn),
		Message:          msg,
		MessageType:      types.MessageTypeDigest,
		SigningAlgorithm: alg,
	})
	if err != nil {
		return nil, fmt.Errorf("awskms: could not sign with key %q: %w", k.id, k.signError(ctx, err))
	}
	return out.Signature, nil
}

// signError explains err from kms:Sign. When KMS says the key's state does
// not allow signing, it asks KMS which state that is.
func (k *Key) signError(ctx context.Context, err error) error {
	if errorCode(err) != "KMSInvalidStateException" {
		return opError("Sign", k.arn, err)
	}
	ctx, cancel := cleanupContext(ctx)
	defer cancel()
	md, derr := k.m.describe(ctx, k.arn)
	if derr != nil {
		return opError("Sign", k.arn, err)
	}
	if serr := stateError(md); serr != nil {
		return fmt.Errorf("%w (%w)", serr, err)
	}
	return opError("Sign", k.arn, err)
}

// signing names KMS's RSA signing algorithms by the hash they use.
var signing = map[crypto.Hash]struct{ pkcs1, pss types.SigningAlgorithmSpec }{
	crypto.SHA256: {types.SigningAlgorithmSpecRsassaPkcs1V15Sha256, types.SigningAlgorithmSpecRsassaPssSha256},
	crypto.SHA384: {types.SigningAlgorithmSpecRsassaPkcs1V15Sha384, types.SigningAlgorithmSpecRsassaPssSha384},
	crypto.SHA512: {types.SigningAlgorithmSpecRsassaPkcs1V15Sha512, types.SigningAlgorithmSpecRsassaPssSha512},
}

// algorithm returns the KMS signing algorithm for opts and the message to
// send for digest.
func (k *Key) algorithm(digest []byte, opts crypto.SignerOpts) (types.SigningAlgorithmSpec, []byte, error) {
	h := opts.HashFunc()
	algs, ok := signing[h]
	if !ok {
		return "", nil, fmt.Errorf("KMS signs SHA-256, SHA-384 or SHA-512 digests, not %v", h)
	}
	if len(digest) != h.Size() {
		return "", nil, fmt.Errorf("the digest is %d bytes long, a %v digest %d", len(digest), h, h.Size())
	}
	pss, isPSS := opts.(*rsa.PSSOptions)
	switch k.typ {
	case hsm.ECP256, hsm.ECP384:
		if isPSS {
			return "", nil, errors.New("PSS options for an EC key")
		}
		// KMS offers one algorithm per curve: ECDSA_SHA_256 on P-256,
		// ECDSA_SHA_384 on P-384, each taking a digest as long as the
		// curve's order. ECDSA signs the digest's leftmost bits up to the
		// order's length (256 or 384), as an integer: zeros before a
		// shorter digest, or the cut end of a longer one, change nothing.
		// So the signature verifies for the digest as given.
		size, alg := 32, types.SigningAlgorithmSpecEcdsaSha256
		if k.typ == hsm.ECP384 {
			size, alg = 48, types.SigningAlgorithmSpecEcdsaSha384
		}
		if len(digest) >= size {
			return alg, digest[:size], nil
		}
		msg := make([]byte, size)
		copy(msg[size-len(digest):], digest)
		return alg, msg, nil
	case hsm.RSA2048, hsm.RSA4096:
		if !isPSS {
			return algs.pkcs1, digest, nil
		}
		if s := pss.SaltLength; s != rsa.PSSSaltLengthEqualsHash && s != rsa.PSSSaltLengthAuto && s != h.Size() {
			return "", nil, fmt.Errorf("KMS signs PSS with a salt as long as the hash (%d bytes), not %d", h.Size(), s)
		}
		return algs.pss, digest, nil
	}
	return "", nil, fmt.Errorf("unknown key type %q", k.typ)
}

// describePublic names the type of a public key, such as "ec-p256".
func describePublic(pub crypto.PublicKey) string { return softkey.Describe(pub) }
