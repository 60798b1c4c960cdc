// Package hsmtest is the contract test suite every hsm.KeyManager passes.
//
// A backend's test hands Run two functions: open returns a new manager that
// holds no keys, and reopen returns another manager over the storage open
// made for the same test, as if the process had restarted. A backend that
// forgets its keys on exit passes nil for reopen.
//
//	func TestContract(t *testing.T) {
//		hsmtest.Run(t, func(t *testing.T) hsm.KeyManager {
//			return memory.New()
//		}, nil)
//	}
//
// A persistent backend derives its storage from the test, so that open and
// reopen find the same place:
//
//	root := t.TempDir()
//	path := func(t *testing.T) string {
//		return filepath.Join(root, url.PathEscape(t.Name()), "keys.json")
//	}
//
// Run checks that every KeyType generates a key whose public half has the
// right curve or size and whose signatures verify (ECDSA ASN.1; RSA PKCS #1
// v1.5 and PSS, SHA-256); that IDs are found, replaced, listed in order and,
// for an hsm.Deleter, deleted; that failures (an empty ID, an unknown type, a
// missing key) are errors that change nothing; that signing and generating
// are safe from many goroutines; and, with reopen, that all of it survives a
// restart. It generates one RSA-4096 key and one or two RSA-2048 keys; the
// rest are P-256 so that a slow device finishes in reasonable time.
//
// BenchmarkSign measures one backend's signing cost so that it can be
// compared with raw crypto/ecdsa measured in the same run.
package hsmtest
