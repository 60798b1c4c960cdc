// Package disk is a key manager that keeps its keys in one file, so that a
// server finds its CA keys again after a restart. It is the counterpart of
// SPIRE's disk KeyManager and its keys_path.
//
// New loads the file, or starts with no keys if there is none yet:
//
//	km, err := disk.New("/var/lib/plinth/server/keys.json")
//	if err != nil {
//		return err // the file is unreadable or corrupt; the error says what to do
//	}
//	key, err := km.GetKey(ctx, "x509-ca-A")
//	if errors.Is(err, hsm.ErrNotFound) {
//		key, err = km.GenerateKey(ctx, "x509-ca-A", hsm.ECP256)
//	}
//
// The file is JSON: a version and, per key ID, the key's type and its PKCS #8
// DER encoding (base64). Every change writes a whole new file next to the old
// one, syncs it and renames it over the old one, so a crash leaves the old
// file or the new one, never a mix; GenerateKey returns only once the new key
// is on disk. The file is written with mode 0600 and its directory, if New
// has to create it, with 0700.
//
// New never replaces a file it cannot read or parse: it returns an error that
// names the file and says what to do, so keys are not lost by accident.
//
// One Manager owns the file: two Managers, or two processes, that change the
// same file lose each other's changes.
//
// Caveat: the private keys are in the clear in the file, protected by its
// permissions only; anyone who can read it, or a backup of it, can sign as
// the CA. Production CA keys belong in an HSM or a KMS.
package disk
