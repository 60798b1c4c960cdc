// Package tpm is the device side of TPM node attestation: it talks to one
// TPM 2.0 and does what an agent needs for a server to trust it. It does not
// judge anything it returns; the pure-Go checks a server runs live in
// package tpm/verify.
//
// # Opening a TPM
//
// The transport is always passed in:
//
//	t, err := tpm.OpenDevice("/dev/tpmrm0")           // a real TPM, through the kernel resource manager
//	t, err := tpm.OpenSocket("unix", "/run/swtpm.sock") // swtpm's data channel (unix or tcp)
//	t := tpm.New(transport)                             // anything else, e.g. the in-process simulator
//
// Package simulator starts swtpm and the in-process simulator, each with an
// EK certificate, for development and tests.
//
// # Attestation, device side
//
// A node proves to a server that it holds a genuine TPM, that an attestation
// key (AK) lives in that same TPM, and what its PCRs say:
//
//	ek, _ := t.EK(ctx)                            // EK public + certificate: sent to the server
//	ak, _ := t.CreateAK(ctx, tpm.AKECCP256)       // AK blobs: kept in the agent's data dir
//	// server: MakeCredential(EK, Name(AK), secret) → idObject, encSecret, and a fresh nonce
//	secret, _ := t.ActivateCredential(ctx, ek, ak, idObject, encSecret)
//	attest, sig, pcrs, _ := t.Quote(ctx, ak, nonce, verify.PCRSelection{tpm2.TPMAlgSHA256: {0, 1, 2, 3, 4, 5, 6, 7}})
//	key, _ := t.CreateKey(ctx)                    // the agent's TLS key, never leaves the TPM
//	cattest, csig, _ := t.Certify(ctx, key, ak, nonce)
//	signer, _ := t.Signer(key)                    // crypto.Signer: the agent SVID's private key
//
// EK documents which EK is chosen when a TPM has several (ECC P-256 first,
// then RSA-2048, then swtpm's ECC P-384, preferring one with a certificate).
//
// # Keys
//
// AKs and keys are created under an ECC P-256 storage root key (the TCG
// template in the owner hierarchy) and come back as two blobs (Key), which
// the agent stores as files: only this TPM can load them, and nothing is left
// persistent in the TPM. The SRK is derived again from the owner seed when
// needed (its context is cached while the TPM stays up), so blobs stay usable
// across reboots until the owner hierarchy is cleared. Every key has
// fixedTPM, fixedParent and sensitiveDataOrigin; AKs are restricted signing
// keys (ECDSA-SHA256 or RSASSA-SHA256).
//
// # Concurrency and resources
//
// A TPM executes one command at a time, and an operation here is several
// commands (create the SRK, load a key, quote, flush). TPM serializes whole
// operations; waiting for the TPM honours the context. Transient objects are
// flushed as soon as an operation ends: swtpm and the in-process simulator
// hold three, and swtpm has no resource manager (OpenSocket flushes what a
// crashed previous client left). Expect real TPM chips to be 10 to 100 times
// slower than swtpm: one attestation is a handful of TPM operations, never
// more.
//
// # Errors
//
// Errors start with "tpm: ", name the operation and the TPM command that
// failed, wrap the TPM's response code (errors.Is(err, tpm2.TPMRCLockout)
// works) and, where an operator can act, say what to do.
package tpm
