package simulator

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// SoftHSMModule is where Debian's softhsm2 package installs the SoftHSM
// PKCS#11 module.
const SoftHSMModule = "/usr/lib/softhsm/libsofthsm2.so"

// SoftHSM is a SoftHSM token in a private directory: what a PKCS#11 client
// needs to use it.
//
// DEV/TEST ONLY. SoftHSM keeps its keys in files under TokenDir, encrypted
// with a key derived from the PIN; anyone who reads the files and knows or
// guesses the PIN has the keys. Its claims that a key was generated inside
// and cannot be extracted (CKA_LOCAL, CKA_NEVER_EXTRACTABLE) are true of the
// software, not of any hardware.
//
// # One SoftHSM configuration per process
//
// SoftHSM reads SOFTHSM2_CONF once, in C_Initialize, and scans its token
// directory then: a process can use only one SoftHSM configuration, and
// tokens initialized after the first C_Initialize (for example by a later
// StartSoftHSM in the same directory) stay invisible until every PKCS#11
// context on the module is closed and the module initialized again. So:
//
//   - set SOFTHSM2_CONF to Config before the process first uses PKCS#11
//     (in TestMain for a test binary, never with t.Setenv in one test);
//   - tests in one binary share one configuration and token directory,
//     and use distinct token labels (or key ID prefixes) to stay apart;
//     create every token they need before the first PKCS#11 use;
//   - a child process (a server under `make demo HSM=softhsm`) gets the
//     variable through Environ.
type SoftHSM struct {
	// Module is the PKCS#11 module: SoftHSMModule.
	Module string
	// Config is the path of softhsm2.conf. Set SOFTHSM2_CONF to it before
	// the process's first PKCS#11 call.
	Config string
	// TokenLabel selects the token. Select tokens by label: SoftHSM moves an
	// initialized token to a new slot number.
	TokenLabel string
	// PIN is the token's user PIN.
	PIN string
	// TokenDir is SoftHSM's token directory (directories.tokendir), which
	// holds one subdirectory per token.
	TokenDir string
}

// StartSoftHSM creates a private SoftHSM configuration and token directory
// under dir, if dir has none yet, and initializes a token in it with the
// label and user PIN and a random security officer PIN that it does not keep.
// dir/softhsm2.conf sets directories.tokendir = dir/tokens,
// objectstore.backend = file and log.level = ERROR. Calling StartSoftHSM
// again with the same dir adds another token to the same configuration; a
// label that dir already has is an error. It takes about 50 ms, and needs
// the softhsm2 package (softhsm2-util and SoftHSMModule).
//
// Caveat: the PIN is on softhsm2-util's command line, which other local
// users can read while it runs. Use it for dev/test PINs only.
func StartSoftHSM(dir, label, pin string) (*SoftHSM, error) {
	if err := checkSoftHSMArgs(label, pin); err != nil {
		return nil, fmt.Errorf("simulator: start softhsm: %w", err)
	}
	util, err := exec.LookPath("softhsm2-util")
	if err != nil {
		return nil, fmt.Errorf("simulator: start softhsm: %w (install the softhsm2 package)", err)
	}
	if _, err := os.Stat(SoftHSMModule); err != nil {
		return nil, fmt.Errorf("simulator: start softhsm: %w (install the softhsm2 package)", err)
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("simulator: start softhsm: %w", err)
	}
	s := &SoftHSM{
		Module:     SoftHSMModule,
		Config:     filepath.Join(dir, "softhsm2.conf"),
		TokenLabel: label,
		PIN:        pin,
		TokenDir:   filepath.Join(dir, "tokens"),
	}
	if err := s.writeConfig(); err != nil {
		return nil, fmt.Errorf("simulator: start softhsm: %w", err)
	}

	labels, err := s.labels(util)
	if err != nil {
		return nil, fmt.Errorf("simulator: start softhsm: %w", err)
	}
	if slices.Contains(labels, label) {
		return nil, fmt.Errorf("simulator: start softhsm: %s already has a token labelled %q", dir, label)
	}
	var soPIN [16]byte
	if _, err := rand.Read(soPIN[:]); err != nil {
		return nil, fmt.Errorf("simulator: start softhsm: %w", err)
	}
	// The error never includes the command line: it holds the PINs.
	if out, err := s.run(util, "--init-token", "--free", "--label", label,
		"--pin", pin, "--so-pin", hex.EncodeToString(soPIN[:])); err != nil {
		return nil, fmt.Errorf("simulator: start softhsm: softhsm2-util --init-token: %w\n%s", err, tail(out, 2000))
	}
	return s, nil
}

// Environ returns the environment variable that points SoftHSM at s's
// configuration, SOFTHSM2_CONF=…, for a child process's environment.
func (s *SoftHSM) Environ() []string {
	return []string{"SOFTHSM2_CONF=" + s.Config}
}

func checkSoftHSMArgs(label, pin string) error {
	switch {
	case label == "":
		return errors.New("token label is empty")
	case len(label) > 32:
		return fmt.Errorf("token label %q is longer than 32 bytes, the most PKCS#11 allows", label)
	case strings.TrimRight(label, " ") != label:
		return fmt.Errorf("token label %q ends in a space, which PKCS#11 uses as padding", label)
	case len(pin) < 4 || len(pin) > 255:
		// Without a valid PIN, softhsm2-util would prompt for one.
		return errors.New("user PIN must have 4 to 255 characters")
	}
	return nil
}

// writeConfig creates the token directory and the configuration file, unless
// they are already there from an earlier StartSoftHSM with the same dir.
func (s *SoftHSM) writeConfig() error {
	if err := os.MkdirAll(s.TokenDir, 0o700); err != nil {
		return err
	}
	want := fmt.Sprintf("# SoftHSM configuration written by plinth simulator.StartSoftHSM.\n"+
		"directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n", s.TokenDir)
	got, err := os.ReadFile(s.Config)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return os.WriteFile(s.Config, []byte(want), 0o600)
	case err != nil:
		return err
	case string(got) != want:
		return fmt.Errorf("%s exists and is not the configuration StartSoftHSM writes; use an empty directory", s.Config)
	}
	return nil
}

// labels returns the labels of the initialized tokens in s's configuration.
func (s *SoftHSM) labels(util string) ([]string, error) {
	out, err := s.run(util, "--show-slots")
	if err != nil {
		return nil, fmt.Errorf("softhsm2-util --show-slots: %w\n%s", err, tail(out, 2000))
	}
	var labels []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if l, ok := strings.CutPrefix(line, "Label:"); ok {
			if l = strings.TrimSpace(l); l != "" {
				labels = append(labels, l)
			}
		}
	}
	return labels, sc.Err()
}

// run runs softhsm2-util with s's configuration and no terminal input, so
// that it fails instead of prompting.
func (s *SoftHSM) run(util string, args ...string) ([]byte, error) {
	cmd := exec.Command(util, args...)
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "SOFTHSM2_CONF=") })
	cmd.Env = append(env, s.Environ()...)
	cmd.Stdin = nil // /dev/null
	return cmd.CombinedOutput()
}
