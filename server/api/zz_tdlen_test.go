package api
import "testing"
func TestXxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxLongName(t *testing.T){ t.Run("some long subtest name here", func(t *testing.T){ t.Log(t.TempDir(), len(t.TempDir())) }) }
