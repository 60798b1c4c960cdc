// Command plinth-demo is `make demo`: it starts a Plinth server and agent in
// a temporary directory on embedded defaults (SQLite, keys on disk, the
// in-process TPM simulator with a test manufacturer CA), attests the node by
// its TPM, registers two workloads running as different users, and shows
// them getting X509- and JWT-SVIDs and talking over mTLS, each authorizing
// the other by SPIFFE ID. It explains each step and removes everything it
// started and wrote.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/plinth-id/plinth/simulator"
	"github.com/plinth-id/plinth/tpm/verify"
)

const td = "example.org"

type demo struct {
	bin, dir   string
	serverSock string
	agentSock  string
	port       int
	hsm        string // "softhsm": CA keys in a private SoftHSM token
	tpmState   string // the simulator's state file: its seed and manufacturer CA
	tpmCA      string // the manufacturer CA bundle the server trusts
	eventLog   string // the node's measured-boot event log (a synthetic Secure Boot boot)
	bootPolicy string // the server's boot policy file
	ekHash     string
	env        []string // extra environment of the server (SOFTHSM2_CONF)
	procs      []*exec.Cmd
	logs       map[string]*bytes.Buffer
}

func main() {
	bin := flag.String("bin", "bin", "directory holding plinth-server, plinth-agent and demo-workload")
	keep := flag.Bool("keep", false, "keep the temporary directory for inspection")
	hsmFlag := flag.String("hsm", "", `where the CA keys live: "" (a file) or "softhsm" (a private SoftHSM token)`)
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d, err := newDemo(*bin)
	if err == nil {
		d.hsm = *hsmFlag
		if d.hsm != "" && d.hsm != "softhsm" {
			err = fmt.Errorf("unknown -hsm %q (want softhsm)", d.hsm)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
	err = d.run(ctx)
	d.stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "\nThe demo failed: %v\n", err)
		for name, buf := range d.logs {
			fmt.Fprintf(os.Stderr, "\n--- %s log ---\n%s", name, buf)
		}
	}
	if *keep {
		fmt.Printf("\nFiles kept in %s\n", d.dir)
	} else {
		os.RemoveAll(d.dir)
	}
	if err != nil {
		os.Exit(1)
	}
}

func newDemo(bin string) (*demo, error) {
	bin, err := filepath.Abs(bin)
	if err != nil {
		return nil, err
	}
	// A short path: unix socket paths must stay under 108 bytes.
	dir, err := os.MkdirTemp("", "plinth-demo-")
	if err != nil {
		return nil, err
	}
	// The workloads run as other users: they must reach the agent's socket
	// and their own binary.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	return &demo{
		bin: bin, dir: dir, port: port,
		serverSock: filepath.Join(dir, "server", "api.sock"),
		agentSock:  filepath.Join(dir, "public", "api.sock"),
		logs:       map[string]*bytes.Buffer{},
	}, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func step(format string, args ...any) { fmt.Printf("\n==> "+format+"\n", args...) }
func note(format string, args ...any) { fmt.Printf("    "+format+"\n", args...) }

func (d *demo) run(ctx context.Context) error {
	fmt.Printf("Plinth demo: a server, an agent and two workloads, in %s\n", d.dir)

	step("Preparing the node's TPM: the in-process simulator, with an EK certificate from a test manufacturer CA")
	if err := d.prepareTPM(); err != nil {
		return err
	}
	note("EK %s (SHA-256 of the endorsement key: the node's identity)", d.ekHash)
	note("manufacturer CA for the server: %s", d.tpmCA)

	step("Writing the node's measured boot: a Secure Boot log (shim, GRUB, kernel) and the server's boot policy")
	if err := d.prepareBoot(); err != nil {
		return err
	}
	note("event log %s (the agent measures it into the simulator, as firmware would)", d.eventLog)
	note("policy %s: Secure Boot on, these boot apps, kernel and command line; no accept-all default", d.bootPolicy)

	keyManager := fmt.Sprintf(`KeyManager "disk" { plugin_data { keys_path = "%s/server/keys.json" } }`, d.dir)
	where := "CA keys on disk"
	if d.hsm == "softhsm" {
		step("Creating a private SoftHSM token for the CA keys")
		token, err := simulator.StartSoftHSM(filepath.Join(d.dir, "softhsm"), "plinth", "demo-pin-1234")
		if err != nil {
			return err
		}
		// The server reads the PIN from a file and SoftHSM its config from
		// the environment; the PIN is never in the configuration.
		pinFile := filepath.Join(d.dir, "softhsm", "pin")
		if err := os.WriteFile(pinFile, []byte(token.PIN), 0o600); err != nil {
			return err
		}
		d.env = token.Environ()
		keyManager = fmt.Sprintf(`KeyManager "pkcs11" { plugin_data { module_path = "%s"  token_label = "%s"  pin_file = "%s" } }`, token.Module, token.TokenLabel, pinFile)
		where = "CA keys generated inside a SoftHSM token"
		note("token %q in %s (PIN in a 0600 file, never in the configuration)", token.TokenLabel, token.TokenDir)
	}

	step("Starting plinth-server (trust domain %s, SQLite datastore, %s, TPM attestation)", td, where)
	serverConf := filepath.Join(d.dir, "server.conf")
	if err := os.WriteFile(serverConf, []byte(fmt.Sprintf(serverConfig, d.port, d.serverSock, td, d.dir, d.dir, keyManager, d.tpmCA, d.bootPolicy)), 0o600); err != nil {
		return err
	}
	if err := d.start("server", filepath.Join(d.bin, "plinth-server"), "run", "-config", serverConf); err != nil {
		return err
	}
	if err := d.waitHealthy(ctx, "plinth-server", d.serverSock); err != nil {
		return err
	}
	note("listening on 127.0.0.1:%d for agents; admin socket %s", d.port, d.serverSock)
	if d.hsm != "" {
		shown, err := d.admin(ctx, "localauthority", "x509", "show")
		if err != nil {
			return err
		}
		for _, line := range strings.Split(strings.TrimSpace(shown), "\n") {
			note("%s", line)
		}
	}

	step("Exporting the trust bundle the agent will trust on first contact")
	bundle, err := d.admin(ctx, "bundle", "show")
	if err != nil {
		return err
	}
	bundlePath := filepath.Join(d.dir, "bootstrap.crt")
	if err := os.WriteFile(bundlePath, []byte(bundle), 0o644); err != nil {
		return err
	}
	note("wrote %s (the server's self-signed CA)", bundlePath)

	nodeID := "spiffe://" + td + "/demo-node"
	step("Registering the node by its TPM endorsement key and its measured boot, and two workloads under it")
	d.admin(ctx, "entry", "create", "-node", "-spiffeID", nodeID, "-selector", "tpm:ek_hash:"+d.ekHash, "-selector", "tpm:policy:"+demoPolicy)
	note("%s  for the node whose TPM has EK %s… and whose boot passes %s", nodeID, d.ekHash[:16], demoPolicy)
	sel := d.selectors()
	for _, w := range []struct{ name, selector string }{{"frontend", sel[0]}, {"backend", sel[1]}} {
		if _, err := d.admin(ctx, "entry", "create", "-parentID", nodeID, "-spiffeID", "spiffe://"+td+"/"+w.name, "-selector", w.selector); err != nil {
			return err
		}
		note("spiffe://%s/%s  for processes with selector %s", td, w.name, w.selector)
	}

	step("Starting plinth-agent; it attests the node with its TPM (no secret copied to it)")
	agentConf := filepath.Join(d.dir, "agent.conf")
	agentDir := filepath.Join(d.dir, "agent")
	if err := os.WriteFile(agentConf, []byte(fmt.Sprintf(agentConfig, agentDir, d.port, d.agentSock, bundlePath, td, d.tpmState, d.eventLog, agentDir)), 0o600); err != nil {
		return err
	}
	start := time.Now()
	if err := d.start("agent", filepath.Join(d.bin, "plinth-agent"), "run", "-config", agentConf); err != nil {
		return err
	}
	if err := d.waitHealthy(ctx, "plinth-agent", d.agentSock); err != nil {
		return err
	}
	agentID := "spiffe://" + td + "/spire/agent/tpm/" + d.ekHash
	shown, err := d.admin(ctx, "agent", "show", "-spiffeID", agentID, "-output", "json")
	if err != nil {
		return err
	}
	var agent struct {
		Selectors []struct{ Type, Value string } `json:"selectors"`
	}
	if err := json.Unmarshal([]byte(shown), &agent); err != nil {
		return fmt.Errorf("agent show: %v: %s", err, shown)
	}
	note("attested in %s: agent ID %s", time.Since(start).Round(time.Millisecond), agentID)
	note("checks passed: EK certificate chains to the manufacturer CA; the AK activated the")
	note("server's credential (so it lives in the same TPM); the quote signed the server's nonce")
	note("over PCRs 0-9 and 12; the AK certified the agent's TLS key, which never leaves the TPM;")
	note("the event log replayed to the quoted PCRs (SHA-1 and SHA-256) and the boot passed policy %s", demoPolicy)
	pcrs := 0
	for _, s := range agent.Selectors {
		if strings.HasPrefix(s.Value, "pcr:") {
			pcrs++
			continue
		}
		note("selector %s:%s", s.Type, s.Value)
	}
	note("selector tpm:pcr:<bank>:<n>:<value> x %d (every quoted PCR)", pcrs)
	note("Workload API on %s", d.agentSock)

	step("Running the two workloads as different users; they fetch SVIDs and talk over mTLS")
	return d.workloads(ctx)
}

// selectors returns the frontend's and backend's selectors: different uids
// when the demo can run processes as other users (root), otherwise the path
// of two copies of the workload binary.
func (d *demo) selectors() [2]string {
	if os.Getuid() == 0 {
		return [2]string{"unix:uid:1001", "unix:uid:1002"}
	}
	return [2]string{"unix:path:" + d.workloadBin("frontend"), "unix:path:" + d.workloadBin("backend")}
}

// prepareTPM creates the simulator's state (seed, manufacturer CA), writes
// the CA for the server, and reads the EK the agent will present. The
// simulator runs in this process only for this; the agent opens its own.
func (d *demo) prepareTPM() error {
	d.tpmState = filepath.Join(d.dir, "tpm-simulator.state")
	d.tpmCA = filepath.Join(d.dir, "tpm-manufacturer-ca.pem")
	caPEM, err := simulator.ManufacturerCAPEM(d.tpmState)
	if err != nil {
		return err
	}
	if err := os.WriteFile(d.tpmCA, caPEM, 0o644); err != nil {
		return err
	}
	sim, err := simulator.OpenInProcess(d.tpmState)
	if err != nil {
		return err
	}
	defer sim.Close()
	ek, err := sim.EK(context.Background())
	if err != nil {
		return err
	}
	pub, err := verify.ParsePublic(ek.Public)
	if err != nil {
		return err
	}
	d.ekHash, err = verify.EKHash(pub)
	return err
}

// demoPolicy is the boot policy the demo node must pass.
const demoPolicy = "demo-secure-boot"

// prepareBoot writes a synthetic Secure Boot event log for the node and a
// policy that allows exactly that boot.
func (d *demo) prepareBoot() error {
	boot := simulator.BootConfig{
		Firmware: "Plinth Demo Firmware 1.0", SecureBoot: true,
		BootApps: [][]byte{[]byte("demo shim 15.8"), []byte("demo grub 2.12")},
		Loader:   "grub", Kernel: []byte("demo kernel 6.1"), Initrd: []byte("demo initrd 6.1"), KernelPath: "/boot/vmlinuz-6.1", Cmdline: "root=/dev/vda1 ro quiet",
	}
	d.eventLog = filepath.Join(d.dir, "binary_bios_measurements")
	if err := os.WriteFile(d.eventLog, simulator.BuildBootLog(boot), 0o644); err != nil {
		return err
	}
	digest := func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }
	d.bootPolicy = filepath.Join(d.dir, "boot-policy.hcl")
	policy := fmt.Sprintf(`policy %q {
  secure_boot = true

  reference "kernel-6.1" {
    firmware        = [%q]
    boot_apps       = [%q, %q]
    boot_files      = [%q, %q]
    kernel_cmdlines = ["/boot/vmlinuz-6.1 root=/dev/vda1 ro quiet"]
  }
}
`, demoPolicy, boot.Firmware, digest(boot.BootApps[0]), digest(boot.BootApps[1]), digest(boot.Kernel), digest(boot.Initrd))
	return os.WriteFile(d.bootPolicy, []byte(policy), 0o644)
}

func (d *demo) workloadBin(name string) string { return filepath.Join(d.dir, name) }

func (d *demo) workloads(ctx context.Context) error {
	backendAddr := fmt.Sprintf("127.0.0.1:%d", mustFreePort())
	run := func(name string, uid uint32, args ...string) (*exec.Cmd, io.ReadCloser, error) {
		path := d.workloadBin(name)
		if err := copyFile(filepath.Join(d.bin, "demo-workload"), path); err != nil {
			return nil, nil, err
		}
		cmd := exec.CommandContext(ctx, path, append([]string{"-socket", d.agentSock, "-name", name}, args...)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if os.Getuid() == 0 {
			cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uid, Gid: uid}
		}
		cmd.Stderr = os.Stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return nil, nil, err
		}
		return cmd, stdout, cmd.Start()
	}
	backend, out, err := run("backend", 1002, "-listen", backendAddr, "-peer", "spiffe://"+td+"/frontend")
	if err != nil {
		return err
	}
	d.procs = append(d.procs, backend)
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "READY" {
				close(ready)
				continue
			}
			fmt.Println(sc.Text())
		}
	}()
	select {
	case <-ready:
	case <-time.After(20 * time.Second):
		return fmt.Errorf("backend did not start serving")
	}
	frontend, fout, err := run("frontend", 1001, "-dial", backendAddr, "-peer", "spiffe://"+td+"/backend")
	if err != nil {
		return err
	}
	io.Copy(os.Stdout, fout)
	if err := frontend.Wait(); err != nil {
		return fmt.Errorf("frontend failed: %w", err)
	}
	if err := backend.Wait(); err != nil {
		return fmt.Errorf("backend failed: %w", err)
	}
	fmt.Println("\nDone: both workloads proved who they are with SVIDs from Plinth; neither held a secret beforehand.")
	return nil
}

func mustFreePort() int {
	p, err := freePort()
	if err != nil {
		panic(err)
	}
	return p
}

func copyFile(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("%w (run `make build` first)", err)
	}
	return os.WriteFile(dst, data, 0o755)
}

// start runs a Plinth binary in the background, logging to a buffer.
func (d *demo) start(name, path string, args ...string) error {
	cmd := exec.Command(path, args...)
	cmd.Dir = d.dir
	cmd.Env = append(os.Environ(), d.env...)
	buf := &bytes.Buffer{}
	d.logs[name] = buf
	cmd.Stdout, cmd.Stderr = buf, buf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("could not start %s: %w", name, err)
	}
	d.procs = append(d.procs, cmd)
	return nil
}

func (d *demo) stop() {
	for i := len(d.procs) - 1; i >= 0; i-- {
		p := d.procs[i]
		if p.ProcessState != nil {
			continue
		}
		p.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			p.Process.Kill()
			<-done
		}
	}
}

func (d *demo) waitHealthy(ctx context.Context, bin, sock string) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err := exec.CommandContext(ctx, filepath.Join(d.bin, bin), "healthcheck", "-socketPath", sock).CombinedOutput()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s did not become healthy: %s", bin, strings.TrimSpace(string(out)))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// admin runs a plinth-server admin command against the demo's server.
func (d *demo) admin(ctx context.Context, args ...string) (string, error) {
	args = append(args, "-socketPath", d.serverSock)
	cmd := exec.CommandContext(ctx, filepath.Join(d.bin, "plinth-server"), args...)
	cmd.Env = append(os.Environ(), d.env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("plinth-server %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

const serverConfig = `server {
    bind_address = "127.0.0.1"
    bind_port = "%d"
    socket_path = "%s"
    trust_domain = "%s"
    data_dir = "%s/server"
    log_level = "INFO"
}
plugins {
    DataStore "sql" { plugin_data { database_type = "sqlite3"  connection_string = "%s/server/datastore.sqlite3" } }
    %s
    NodeAttestor "tpm" {
        plugin_data {
            ek_ca_path = "%s"
            enrollment = "ek_cert"
            measured_boot { policy_file = "%s"  policy = "` + demoPolicy + `" }
        }
    }
}
`

const agentConfig = `agent {
    data_dir = "%s"
    log_level = "INFO"
    server_address = "127.0.0.1"
    server_port = "%d"
    socket_path = "%s"
    trust_bundle_path = "%s"
    trust_domain = "%s"
}
plugins {
    NodeAttestor "tpm" { plugin_data { simulator = "%s"  event_log_path = "%s" } }
    KeyManager "tpm" { plugin_data { directory = "%s" } }
    WorkloadAttestor "unix" { plugin_data { discover_workload_path = true } }
}
`
