//go:build !cgo

package pkcs11_test

import (
	"testing"

	"github.com/plinth-id/plinth/hsm/pkcs11"
)

func TestNoCgo(t *testing.T) {
	const want = "pkcs11: this binary was built without cgo; PKCS#11 needs cgo"
	m, err := pkcs11.New(pkcs11.Config{Module: "/usr/lib/softhsm/libsofthsm2.so", TokenLabel: "plinth", PIN: "1234"})
	if m != nil || err == nil || err.Error() != want {
		t.Fatalf("New without cgo: got %v, %v; want error %s", m, err, want)
	}
}
