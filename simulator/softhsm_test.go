package simulator_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/plinth-id/plinth/simulator"
)

// TestStartSoftHSM starts two tokens in one directory and logs in to each
// through the PKCS#11 module. It is the only test in this binary that uses
// PKCS#11, so it may point SOFTHSM2_CONF at its own configuration.
func TestStartSoftHSM(t *testing.T) {
	dir := t.TempDir()
	a, err := simulator.StartSoftHSM(dir, "plinth-a", "1111")
	if err != nil {
		t.Fatal(err)
	}
	b, err := simulator.StartSoftHSM(dir, "plinth-b", "2222")
	if err != nil {
		t.Fatal(err)
	}
	want := simulator.SoftHSM{
		Module:     "/usr/lib/softhsm/libsofthsm2.so",
		Config:     filepath.Join(dir, "softhsm2.conf"),
		TokenLabel: "plinth-a",
		PIN:        "1111",
		TokenDir:   filepath.Join(dir, "tokens"),
	}
	if *a != want {
		t.Errorf("StartSoftHSM = %+v, want %+v", *a, want)
	}
	if b.Config != a.Config || b.TokenDir != a.TokenDir || b.TokenLabel != "plinth-b" {
		t.Errorf("second token in the same dir: %+v", *b)
	}
	conf, err := os.ReadFile(a.Config)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"directories.tokendir = " + a.TokenDir, "objectstore.backend = file", "log.level = ERROR"} {
		if !slices.Contains(strings.Split(string(conf), "\n"), line) {
			t.Errorf("softhsm2.conf lacks %q:\n%s", line, conf)
		}
	}
	for path, mode := range map[string]os.FileMode{a.Config: 0o600, a.TokenDir: 0o700} {
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, error %v; want %v", path, fi.Mode().Perm(), err, mode)
		}
	}
	if got := a.Environ(); !slices.Equal(got, []string{"SOFTHSM2_CONF=" + a.Config}) {
		t.Errorf("Environ() = %q", got)
	}

	t.Setenv("SOFTHSM2_CONF", a.Config)
	p := pkcs11.New(a.Module)
	if p == nil {
		t.Fatalf("cannot load %s", a.Module)
	}
	defer p.Destroy()
	if err := p.Initialize(); err != nil {
		t.Fatal(err)
	}
	finalized := false
	defer func() {
		if !finalized {
			p.Finalize()
		}
	}()
	for _, tok := range []*simulator.SoftHSM{a, b} {
		if err := login(p, tok.TokenLabel, tok.PIN); err != nil {
			t.Errorf("login to %q: %v", tok.TokenLabel, err)
		}
	}
	if err := login(p, "plinth-b", "1111"); !errors.Is(err, pkcs11.Error(pkcs11.CKR_PIN_INCORRECT)) {
		t.Errorf("login to plinth-b with plinth-a's PIN: got %v, want CKR_PIN_INCORRECT", err)
	}

	// The trap StartSoftHSM documents: a token initialized after
	// C_Initialize is invisible until the module is initialized again.
	c, err := simulator.StartSoftHSM(dir, "plinth-c", "3333")
	if err != nil {
		t.Fatal(err)
	}
	if err := login(p, c.TokenLabel, c.PIN); err == nil || err.Error() != `no token "plinth-c"` {
		t.Errorf("login to a token made after C_Initialize: got %v, want it invisible", err)
	}
	if err := p.Finalize(); err != nil {
		t.Fatal(err)
	}
	finalized = true
	if err := p.Initialize(); err != nil {
		t.Fatal(err)
	}
	finalized = false
	if err := login(p, c.TokenLabel, c.PIN); err != nil {
		t.Errorf("login to plinth-c after a new C_Initialize: %v", err)
	}
}

// login opens a session on the token with the label and logs in.
func login(p *pkcs11.Ctx, label, pin string) error {
	slots, err := p.GetSlotList(true)
	if err != nil {
		return err
	}
	for _, slot := range slots {
		info, err := p.GetTokenInfo(slot)
		if err != nil || info.Label != label {
			continue
		}
		s, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION)
		if err != nil {
			return err
		}
		defer p.CloseSession(s)
		if err := p.Login(s, pkcs11.CKU_USER, pin); err != nil {
			return err
		}
		return p.Logout(s)
	}
	return errors.New(`no token "` + label + `"`)
}

func TestStartSoftHSMErrors(t *testing.T) {
	used := t.TempDir()
	if _, err := simulator.StartSoftHSM(used, "taken", "pin-7c1f"); err != nil {
		t.Fatal(err)
	}
	foreign := t.TempDir()
	if err := os.WriteFile(filepath.Join(foreign, "softhsm2.conf"), []byte("directories.tokendir = /var/lib/softhsm/tokens/\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, dir, label, pin, want string
	}{
		{"empty label", t.TempDir(), "", "pin-7c1f", "simulator: start softhsm: token label is empty"},
		{"long label", t.TempDir(), strings.Repeat("l", 33), "pin-7c1f", `simulator: start softhsm: token label "` + strings.Repeat("l", 33) + `" is longer than 32 bytes, the most PKCS#11 allows`},
		{"padded label", t.TempDir(), "plinth ", "pin-7c1f", `simulator: start softhsm: token label "plinth " ends in a space, which PKCS#11 uses as padding`},
		{"short PIN", t.TempDir(), "plinth", "123", "simulator: start softhsm: user PIN must have 4 to 255 characters"},
		{"label taken", used, "taken", "pin-7c1f", "simulator: start softhsm: " + used + ` already has a token labelled "taken"`},
		{"foreign config", foreign, "plinth", "pin-7c1f", "simulator: start softhsm: " + filepath.Join(foreign, "softhsm2.conf") + " exists and is not the configuration StartSoftHSM writes; use an empty directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := simulator.StartSoftHSM(tt.dir, tt.label, tt.pin)
			if err == nil || err.Error() != tt.want {
				t.Errorf("StartSoftHSM: got error %v, want %s", err, tt.want)
			}
			if err != nil && len(tt.pin) >= 4 && strings.Contains(err.Error(), tt.pin) {
				t.Errorf("error %q contains the PIN", err)
			}
		})
	}
}
