// Package pkcs11 is a key manager that keeps its keys in a PKCS#11 token: an
// HSM, a smart card, or SoftHSM in development and CI. The private keys are
// generated on the token, marked sensitive and not extractable, and never
// leave it; Plinth holds only handles to them.
//
// # Opening a token
//
// Name the module (the vendor's PKCS#11 library), the token's label and the
// user PIN. Read the PIN from a file or an environment variable, never from
// the configuration file:
//
//	km, err := pkcs11.New(pkcs11.Config{
//		Module:      "/usr/lib/softhsm/libsofthsm2.so",
//		TokenLabel:  "plinth",
//		PIN:         os.Getenv("PLINTH_PKCS11_PIN"),
//		KeyIDPrefix: "plinth/example.org/", // optional: several servers on one token
//	})
//	if err != nil {
//		return err // says which: no module, no such token (and which exist), wrong PIN
//	}
//	defer km.Close()
//
// Select the token by label: slot numbers change (SoftHSM moves a token to a
// new slot when it is initialized). The PIN is never logged and never in an
// error; Config's String and LogValue leave it out.
//
// # Keys
//
// Keys are found by stable IDs, which are the CKA_LABEL and CKA_ID of both
// halves of the key pair (after KeyIDPrefix), so a restarted server finds
// its keys again and an operator finds them with pkcs11-tool:
//
//	key, err := km.GetKey(ctx, "x509-ca-A")
//	if errors.Is(err, hsm.ErrNotFound) {
//		key, err = km.GenerateKey(ctx, "x509-ca-A", hsm.ECP256) // or ECP384, RSA2048, RSA4096
//	}
//	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
//
// GenerateKey on an ID that has a key replaces it in a way a crash cannot
// break: the ID keeps the old key or gets the new one, never neither and
// never both (repair.go explains the steps). DeleteKey (hsm.Deleter)
// removes a key pair; Provenance (hsm.Attester) reports the token's
// CKA_LOCAL, CKA_NEVER_EXTRACTABLE, CKA_SENSITIVE and CKA_EXTRACTABLE for a
// key and its pkcs11: URI; Sweep (hsm.Sweeper) cleans up after crashes.
//
// # Speed
//
// A key keeps its object handle and its crypto11 signer, and crypto11 lends
// each signature a session from its pool, so Sign looks nothing up and takes
// no lock: it signs as fast as crypto11 on the token does.
// BenchmarkSignPKCS11 and BenchmarkSignRawCrypto11 measure the two in one
// run (SoftHSM on the development machines: 60 to 70 µs per ECDSA P-256
// signature for both).
//
// # When the HSM goes away
//
// An HSM restarts, fails over or drops off the network; its sessions die and
// the process is logged out. The call that notices (CKR_SESSION_HANDLE_INVALID,
// CKR_USER_NOT_LOGGED_IN, CKR_DEVICE_REMOVED, CKR_TOKEN_NOT_PRESENT,
// CKR_CRYPTOKI_NOT_INITIALIZED, or an invalid handle on a token that no
// longer answers) closes every context on the module, so that the module is
// finalized and initialized afresh, reopens the token, logs in and tries
// once more. If the token is still gone, the call fails with an error
// wrapping ErrUnavailable, and so do all calls, fast and without touching
// the module, until a backoff (ReopenBackoff, doubling up to
// MaxReopenBackoff) has passed and the next call tries again. The server
// reports that it cannot sign, keeps serving what it has, and signs again
// when the token is back, without a restart. Config.Log hears of each
// failed attempt and of the recovery. A key deleted behind the
// manager's back is not an outage: GetKey says hsm.ErrNotFound, and a Key
// that was deleted or replaced refuses to sign with an error wrapping it.
//
// # Caveats
//
// PKCS#11 state belongs to the process: C_Initialize, C_Finalize and the
// login to a token. Managers of one process cooperate (they share a lock per
// token and reopen together), but other code that uses the same module in
// the process, crypto11 included, is not coordinated with them: a reset
// closes only this package's contexts, and a module left initialized by
// other code makes New fail. A second Manager on a token that the process
// is already logged in to is not asked for the right PIN (the token does not
// check it again).
//
// Provenance reports what the token claims. SoftHSM claims it about files
// on disk; only a certified HSM backs CKA_NEVER_EXTRACTABLE with hardware.
//
// This package needs cgo: a binary built without it has a New that returns
// an error saying so.
package pkcs11
