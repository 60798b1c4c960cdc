package verify_test

import (
	"errors"
	"fmt"

	"github.com/plinth-id/plinth/tpm/verify"
)

// A rejection names its check and its reason; audit records keep both.
func ExampleError() {
	_, err := verify.ParsePublic([]byte{0x00, 0x23, 0x00})
	var e *verify.Error
	if errors.As(err, &e) {
		fmt.Printf("check %q: %s\n", e.Check, e.Reason)
	}
	fmt.Println(err)
	// Output:
	// check "public area": TPMT_PUBLIC is malformed
	// verify: public area: TPMT_PUBLIC is malformed
}
