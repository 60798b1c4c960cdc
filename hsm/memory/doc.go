// Package memory is a key manager that holds its keys in process memory and
// forgets them when the process exits.
//
// It is for tests and for a development server, where a new CA on every start
// is what you want. Its keys sign as fast as crypto/ecdsa and crypto/rsa do:
// Sign takes no lock and allocates nothing beyond what crypto allocates.
//
// Create a manager and a key, then sign with it as with any crypto.Signer:
//
//	km := memory.New()
//	key, err := km.GenerateKey(ctx, "x509-ca-A", hsm.ECP256)
//	if err != nil {
//		return err
//	}
//	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
//
// GetKey finds the key again by its ID, GenerateKey on the same ID replaces
// it, and DeleteKey (hsm.Deleter) removes it.
//
// Caveat: private keys sit unprotected in the process's memory, where a core
// dump or a debugger can read them. Production CA keys belong in an HSM or a
// KMS.
package memory
