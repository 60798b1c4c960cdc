package simulator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/plinth-id/plinth/tpm"
)

// SWTPMState is a provisioned swtpm TPM 2.0 state: an RSA-2048 EK
// (persistent 0x81010001, certificate in NV 0x01c00002), swtpm's ECC P-384 EK
// (0x81010016, certificate in NV 0x01c00016), a platform certificate
// (0x01c08000), and the sha1 and sha256 PCR banks active.
type SWTPMState struct {
	// Dir is the swtpm state directory (what `swtpm --tpmstate dir=` takes).
	// StartSWTPM copies it; it is never run directly.
	Dir string
	// CAPEM is the private swtpm-localca that signed the EK certificates:
	// its root and intermediate certificates, PEM. Put it in a test server's
	// EK manufacturer CA bundle. DEV/TEST ONLY.
	CAPEM []byte
}

// ProvisionSWTPM creates a TPM state with RSA and ECC EKs and their
// certificates, signed by a private swtpm-localca in dir. Everything is
// written under dir (state/, localca/, private swtpm_setup.conf and
// swtpm-localca.conf, setup.log), except the short-lived pid file swtpm_setup
// itself puts in /tmp. It takes about a second: do it once per test binary and
// let StartSWTPM copy the result.
func ProvisionSWTPM(dir string) (*SWTPMState, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("simulator: provision swtpm: %w", err)
	}
	stateDir := filepath.Join(dir, "state")
	caDir := filepath.Join(dir, "localca")
	tmpDir := filepath.Join(dir, "tmp")
	for _, d := range []string{stateDir, caDir, tmpDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("simulator: provision swtpm: %w", err)
		}
	}
	caConf := filepath.Join(dir, "swtpm-localca.conf")
	setupConf := filepath.Join(dir, "swtpm_setup.conf")
	localca, err := exec.LookPath("swtpm_localca")
	if err != nil {
		return nil, fmt.Errorf("simulator: provision swtpm: %w (install the swtpm-tools package)", err)
	}
	files := map[string]string{
		caConf: fmt.Sprintf("statedir = %s\nsigningkey = %s\nissuercert = %s\ncertserial = %s\n",
			caDir, filepath.Join(caDir, "signkey.pem"), filepath.Join(caDir, "issuercert.pem"), filepath.Join(caDir, "certserial")),
		setupConf: fmt.Sprintf("create_certs_tool = %s\ncreate_certs_tool_config = %s\nactive_pcr_banks = sha1,sha256\n", localca, caConf),
	}
	for name, content := range files {
		if err := os.WriteFile(name, []byte(content), 0o600); err != nil {
			return nil, fmt.Errorf("simulator: provision swtpm: %w", err)
		}
	}
	logFile := filepath.Join(dir, "setup.log")
	cmd := exec.Command("swtpm_setup", "--tpm2", "--tpmstate", stateDir,
		"--createek", "--create-ek-cert", "--create-platform-cert",
		"--config", setupConf, "--pcr-banks", "sha1,sha256",
		"--logfile", logFile, "--overwrite")
	cmd.Dir = dir
	// swtpm_setup writes the certificates to a temporary directory first.
	cmd.Env = append(os.Environ(), "TMPDIR="+tmpDir)
	if out, err := cmd.CombinedOutput(); err != nil {
		log, _ := os.ReadFile(logFile)
		return nil, fmt.Errorf("simulator: provision swtpm: swtpm_setup: %w\n%s%s", err, out, tail(log, 2000))
	}
	var caPEM []byte
	for _, f := range []string{"swtpm-localca-rootca-cert.pem", "issuercert.pem"} {
		b, err := os.ReadFile(filepath.Join(caDir, f))
		if err != nil {
			return nil, fmt.Errorf("simulator: provision swtpm: read the local CA: %w", err)
		}
		caPEM = append(caPEM, b...)
	}
	return &SWTPMState{Dir: stateDir, CAPEM: caPEM}, nil
}

// SWTPM is a running `swtpm socket --tpm2` child process.
type SWTPM struct {
	// Socket is the data channel (unix socket): raw TPM commands.
	Socket string
	// Ctrl is swtpm's control channel (unix socket; swtpm's own protocol).
	Ctrl string
	// StateDir is this instance's copy of the state.
	StateDir string
	// CAPEM is the CA that signed the EK certificates (from the SWTPMState).
	CAPEM []byte

	dir      string // this instance's directory
	sockDir  string // a short directory for the sockets, removed by Stop, if dir was too long
	locality int    // the locality TPM2_Startup is sent at (see StartSWTPMAt)

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been waited for
	output bytes.Buffer  // swtpm's stdout and stderr
}

// unixPathMax leaves room below the kernel's 108-byte sun_path limit.
const unixPathMax = 100

// StartSWTPM copies the state into a fresh directory under dir and runs
// `swtpm socket --tpm2` on unix sockets, with `--flags
// not-need-init,startup-clear` (the TPM is started, as after firmware). The
// child gets SIGKILL if the thread that started it dies (Pdeathsig), so a
// crashed test leaves no swtpm behind; call Stop when done. StartSWTPM
// returns once swtpm answers a command.
//
// If the socket paths under dir would be too long for a unix socket, the
// sockets go into a short temporary directory that Stop removes.
func StartSWTPM(ctx context.Context, st *SWTPMState, dir string) (*SWTPM, error) {
	return StartSWTPMAt(ctx, st, dir, 0)
}

// StartSWTPMAt is StartSWTPM with TPM2_Startup(CLEAR) sent at locality, 0 or
// 3, as platform firmware does. A TPM started at locality 3 (what an H-CRTM
// platform's firmware does, and what its event log's StartupLocality event
// records) has PCR 0 reset to 00…03 instead of all zero in every bank.
// Restart starts the TPM at the same locality again.
//
// For locality 3, swtpm runs without startup-clear; StartSWTPMAt sets the
// locality over the control channel (CMD_SET_LOCALITY), sends TPM2_Startup on
// the data channel and sets the locality back to 0, so every later command
// runs at locality 0.
func StartSWTPMAt(ctx context.Context, st *SWTPMState, dir string, locality int) (*SWTPM, error) {
	if locality != 0 && locality != 3 {
		return nil, fmt.Errorf("simulator: start swtpm: startup locality %d: a TPM starts at locality 0 or 3", locality)
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("simulator: start swtpm: %w", err)
	}
	run, err := os.MkdirTemp(dir, "swtpm-")
	if err != nil {
		return nil, fmt.Errorf("simulator: start swtpm: %w", err)
	}
	s := &SWTPM{StateDir: filepath.Join(run, "state"), CAPEM: st.CAPEM, dir: run, locality: locality}
	if err := copyDir(st.Dir, s.StateDir); err != nil {
		return nil, fmt.Errorf("simulator: start swtpm: copy state: %w", err)
	}
	sockDir := run
	if len(filepath.Join(run, "ctrl.sock")) > unixPathMax {
		if sockDir, err = os.MkdirTemp("", "swtpm-"); err != nil {
			return nil, fmt.Errorf("simulator: start swtpm: %w", err)
		}
		s.sockDir = sockDir
	}
	s.Socket = filepath.Join(sockDir, "data.sock")
	s.Ctrl = filepath.Join(sockDir, "ctrl.sock")
	if err := s.start(ctx); err != nil {
		if s.sockDir != "" {
			os.RemoveAll(s.sockDir)
		}
		return nil, err
	}
	return s, nil
}

func (s *SWTPM) start(ctx context.Context) error {
	os.Remove(s.Socket)
	os.Remove(s.Ctrl)
	flags := "not-need-init,startup-clear"
	if s.locality != 0 {
		flags = "not-need-init" // startup comes from startAt
	}
	cmd := exec.Command("swtpm", "socket", "--tpm2",
		"--server", "type=unixio,path="+s.Socket,
		"--ctrl", "type=unixio,path="+s.Ctrl,
		"--tpmstate", "dir="+s.StateDir,
		"--flags", flags,
		"--log", "file="+filepath.Join(s.dir, "swtpm.log"))
	s.output.Reset()
	cmd.Stdout = &lockedWriter{mu: &s.mu, w: &s.output}
	cmd.Stderr = cmd.Stdout
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("simulator: start swtpm: %w (install the swtpm package)", err)
	}
	exited := make(chan struct{})
	go func() { // waited for by Stop
		cmd.Wait()
		close(exited)
	}()
	s.mu.Lock()
	s.cmd, s.exited = cmd, exited
	s.mu.Unlock()
	if s.locality != 0 {
		if err := s.startAt(ctx); err != nil {
			s.Stop()
			return err
		}
	}
	if err := s.waitReady(ctx); err != nil {
		s.Stop()
		return err
	}
	return nil
}

// waitReady connects until swtpm answers TPM2_GetCapability.
func (s *SWTPM) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	delay := time.Millisecond
	for {
		t, err := tpm.OpenSocket("unix", s.Socket)
		if err == nil {
			_, err = t.Info(ctx)
			t.Close()
			if err == nil {
				return nil
			}
		}
		select {
		case <-s.exited:
			return fmt.Errorf("simulator: start swtpm: swtpm exited: %s", s.Output())
		case <-ctx.Done():
			return fmt.Errorf("simulator: start swtpm: no answer on %s: %w (last error: %v)", s.Socket, ctx.Err(), err)
		case <-time.After(delay):
		}
		delay = min(2*delay, 50*time.Millisecond)
	}
}

// Open connects to the TPM. swtpm serves one client at a time: close the TPM
// before opening it again (a second connection waits until then).
func (s *SWTPM) Open() (*tpm.TPM, error) {
	return tpm.OpenSocket("unix", s.Socket)
}

// Restart stops swtpm and starts it again on the same state directory, like
// a reboot: what is in NV (EKs, certificates) and the seeds (so key blobs)
// survive; PCRs, loaded objects and sessions do not.
func (s *SWTPM) Restart(ctx context.Context) error {
	if err := s.kill(); err != nil {
		return err
	}
	return s.start(ctx)
}

// Stop kills swtpm and waits for it. It is safe to call more than once.
func (s *SWTPM) Stop() error {
	err := s.kill()
	if s.sockDir != "" {
		if rerr := os.RemoveAll(s.sockDir); err == nil {
			err = rerr
		}
	}
	return err
}

func (s *SWTPM) kill() error {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return nil
	}
	if err := cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("simulator: stop swtpm (pid %d): %w", cmd.Process.Pid, err)
	}
	<-exited
	return nil
}

// PID returns the process ID of the running swtpm, or 0 after Stop.
func (s *SWTPM) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Output returns what swtpm printed (for test failure messages).
func (s *SWTPM) Output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.output.String()
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// copyDir copies the regular files of src (not its lock file) into a new
// directory dst.
func copyDir(src, dst string) error {
	if err := os.Mkdir(dst, 0o700); err != nil {
		return err
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !e.Type().IsRegular() || strings.HasPrefix(e.Name(), ".lock") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
