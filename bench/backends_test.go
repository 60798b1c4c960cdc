package bench

import (
	"testing"

	"github.com/plinth-id/plinth/hsm"
)

// extraBackends returns key backends that need a daemon or device (SoftHSM).
func extraBackends(b *testing.B) []struct {
	name   string
	keys   hsm.KeyManager
	n      int
	target float64
} {
	return nil
}
