// Package verify is the server's half of TPM node attestation: pure Go over
// the bytes an agent sends, with no device access and no cgo. The agent's
// half, which talks to the TPM, is package tpm; the server links only this
// package.
//
// # What a server learns, and how
//
// An agent sends its EK public area (and the EK certificate when its TPM has
// one) and the public area of an attestation key (AK) it created. The server
// then establishes, in this order:
//
//  1. The EK belongs to a genuine TPM: its certificate chains to a
//     manufacturer CA (EKVerifier.Verify), or its EKHash is enrolled.
//  2. The AK is a key only a TPM can use for attestation (CheckAK), and it
//     lives in the same TPM as that EK: MakeCredential seals a fresh secret
//     that only that TPM can recover, and only with that AK loaded.
//  3. The TPM is running now and measured what it reports: a quote over the
//     server's PCR selection and a fresh nonce (VerifyQuote).
//  4. The agent's TLS key lives in that TPM: the AK certifies it
//     (VerifyCertify, CheckAgentKey).
//
// In code, with the checks a server must not skip:
//
//	v, err := verify.LoadEKVerifier(manufacturerCAsPEM) // once, at start
//
//	ek, err := verify.ParsePublic(ekPublicBytes)
//	cert, err := v.Verify(ekCertDER, ek, now)         // or: enrollment lookup of EKHash(ek)
//	info, err := verify.ParseEKCertInfo(cert)         // manufacturer, model, version, issuer
//	id, err := verify.EKHash(ek)                      // spiffe://<td>/spire/agent/tpm/<id>
//
//	ak, err := verify.ParsePublic(akPublicBytes)
//	err = verify.CheckAK(ak)
//	secret := 32 random bytes; nonce := 32 random bytes, single use
//	idObject, encSecret, err := verify.MakeCredential(ek, ak.Name, secret)
//	// → agent: ActivateCredential, Quote(nonce, selection), Certify(agent key, nonce)
//	subtle.ConstantTimeCompare(activated, secret) == 1
//	err = verify.VerifyQuote(ak, quoteAttest, quoteSig, nonce, selection, pcrValues)
//	key, err := verify.ParsePublic(agentKeyBytes)
//	err = verify.CheckAgentKey(key)
//	err = verify.VerifyCertify(ak, certifyAttest, certifySig, nonce, key)
//	// key.Key is the agent SVID's public key; its private half never leaves the TPM.
//
// Each step leans on the ones before it. CheckAK reads attributes the agent
// could have made up; they become the TPM's word only once activation shows
// the AK is in the EK's TPM (MakeCredential binds the secret to the AK's
// Name, a digest of its whole public area). A quote means something only
// because the AK is restricted: it signs no TPMS_ATTEST the TPM did not
// build. The PCR values in a VerifyQuote call are the agent's claim until
// VerifyQuote returns nil, and the server's to trust after.
//
// # Bytes in, exactly
//
// Every structure is parsed with go-tpm's tpm2 types and then marshalled
// again: bytes that do not come back identical (trailing data, a
// non-canonical encoding) are refused. So Public.Raw, Public.Area and
// Public.Name always describe the same object, and what was signed is what
// was checked. The wire forms are the TPM's, without TPM2B size prefixes:
// TPMT_PUBLIC for keys, TPMS_ATTEST and TPMT_SIGNATURE for quotes and
// certifications, TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET contents from
// MakeCredential. Every parser has a fuzz target (go test -fuzz=FuzzParsePublic,
// FuzzVerifyQuote, FuzzVerifyCertify, FuzzEKCert).
//
// # EK certificates
//
// EK certificates follow the TCG EK Credential Profile, and crypto/x509
// refuses them as they come from swtpm and from several vendors: the
// subject alternative name is critical and holds only a directoryName with
// the TPM's manufacturer, model and version, and the extended key usage is
// the TCG's 2.23.133.8.1. Verify accepts exactly these differences and keeps
// every other check: a critical SAN with any other kind of name, or any
// other unhandled critical extension, is refused; an EKU, when present,
// must include the EK usage; the chain must verify to a configured root at
// the given time; and the certified key must equal the presented EK.
// Certificates read from NV often carry padding after the DER: the device
// side trims it, and Verify refuses it.
//
// # Errors
//
// Every rejection is an *Error naming the check and the reason, stable
// enough to audit and to test literally:
//
//	verify: quote: nonce does not match the challenge
//	verify: ek certificate: EK certificate is for a different key
//
// The checks are "public area", "ek", "ek ca bundle", "ek certificate",
// "ak", "agent key", "credential", "quote", "certify" and "event log". Quote and
// certification verification report an AK that fails CheckAK under "ak".
//
// # Measured boot
//
// Once VerifyQuote has vouched for the PCR values, the agent's TCG event log
// says what those values are made of:
//
//	log, state, err := verify.VerifyEventLog(rawLog, pcrValues)
//	reasons := policy.Evaluate(state) // none: the boot passes
//
// ParseEventLog reads crypto-agile (TCG_PCR_EVENT2) and SHA-1 logs, within
// MaxEventLogSize, MaxEvents and MaxEventData. EventLog.Replay extends every
// event from the PCR's reset value (PCR 0 from the log's StartupLocality,
// PCRs 17-22 from all ones) and requires each quoted PCR the log has events
// for to come out exactly as quoted, in every quoted bank the log carries;
// PCRs 0-9 with no events must be at their reset value. A log with an event
// changed, removed, duplicated or reordered, a log spliced from another
// machine, or a log whose banks disagree, does not replay; the error names
// the PCR and, where the log shows it, the first event where it parts from
// the TPM. A log without SHA-256 digests from a TPM with a SHA-256 bank is
// refused (SHA-1 alone does not resist collisions).
//
// EventLog.BootState reads only events on PCRs that replayed. The TPM
// measured digests: an event's type and its data are the log's word unless
// the data hashes to the digest. So facts come from data checked against
// its digest in every bank (go-attestation replays digests only), from
// replayed digests, or from the order of events on one PCR, never from a
// type or a label alone: every PCR 4 event but a bound short action or a
// separator counts as a boot application, a PCR 7 event of a type with no
// place there refuses the log, GRUB's strings are classified by their
// measured text, and a PCR 8 or 12 event that is not a bound string makes
// the command lines unknown. And since a running OS can extend PCRs 0-15
// too, facts that can take several values keep all of them (boot
// applications, files, command lines) for a policy to allow every one, and
// the firmware's facts count only before their PCR's separator.
// What it reads: Secure Boot and the PK, KEK, db and dbx databases (PCR 7
// variables, certificates named by the SHA-256 of their DER, read even when
// Go's x509 refuses them), the authorities that verified boot applications,
// the boot applications' digests (PCR 4), GRUB's commands and the files it
// read (PCRs 8 and 9; upstream and Red Hat formats), the kernel command
// lines (GRUB's linux commands, systemd's PCR 12, or PCR 8 before v250) and
// the firmware version (PCR 0). The kernel and initrd it names are for
// people: their paths are not measured. What cannot be read soundly is left
// out with a note: no requirement is met by an absent fact.
//
// A Policy is named requirements plus reference sets (one must match, so a
// fleet can roll firmware or kernels). It passes only on proven facts: a
// requirement whose PCR is not in the quote, or whose fact was not measured,
// fails with its reason. Policy.NeededPCRs tells the server what to quote.
//
// # Not checked here
//
// Nonce freshness and single use, and the comparison of the activated
// secret, are the caller's: this package keeps no state. The quote's clock
// information (reset and restart counts) and firmware version are signed
// but not interpreted.
package verify
