package tpm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
)

// ErrClosed is returned by every method of a TPM after Close.
var ErrClosed = errors.New("tpm: TPM is closed")

// DefaultCommandTimeout bounds one command on a socket transport when the
// context has no earlier deadline. RSA key generation on a slow TPM chip can
// take tens of seconds, so it is generous.
const DefaultCommandTimeout = 2 * time.Minute

// openTimeout bounds connecting to a socket TPM and its first commands.
const openTimeout = 10 * time.Second

// TPM is one TPM.
//
// A TPM is single-threaded: every method holds a lock for its whole
// multi-command operation (for example create the SRK, load a key, sign,
// flush), so a TPM is safe for concurrent use and its operations never
// interleave. Waiting for the lock honours the context.
//
// Keys are kept as blobs (see Key) under an ECC P-256 storage root key (SRK)
// that is derived again from the owner hierarchy's seed when needed; nothing is
// made persistent in the TPM. Transient objects are flushed as soon as an
// operation ends, because small TPMs (and the in-process simulator) hold only
// three.
type TPM struct {
	sem chan struct{} // holds one token; taken for the duration of an operation
	tr  transport.TPMCloser

	// Guarded by sem.
	closed    bool
	primaries map[string]savedObject // by hierarchy and template; see loadPrimary
}

// New returns a TPM that sends its commands over t. The TPM owns t from now
// on and closes it in Close.
//
// New sends no command: a TPM started by firmware, by swtpm with
// `--flags startup-clear` or by the in-process simulator is ready for use.
func New(t transport.TPMCloser) *TPM {
	return &TPM{sem: make(chan struct{}, 1), tr: t, primaries: map[string]savedObject{}}
}

// OpenDevice opens a TPM character device, normally the kernel's resource
// manager /dev/tpmrm0. Prefer /dev/tpmrm0 over /dev/tpm0: the resource manager
// flushes what a crashed process left loaded and lets other TPM users run
// alongside Plinth.
func OpenDevice(path string) (*TPM, error) {
	tr, err := linuxtpm.Open(path)
	if err != nil {
		return nil, fmt.Errorf("tpm: open device %s: %w (check that the TPM is enabled in firmware, that the tpm_tis/tpm_crb driver is loaded and that this user may open the device, e.g. is in the tss group)", path, err)
	}
	return New(tr), nil
}

// OpenSocket connects to a TPM that takes raw TPM command bytes over a stream
// socket: swtpm's data channel (`swtpm socket --server type=unixio,path=…` or
// `type=tcp,port=…`). network is "unix" or "tcp".
//
// Commands go over one persistent connection, each bounded by the context's
// deadline or DefaultCommandTimeout. After an I/O error the connection is
// closed; the next operation dials again and flushes what the broken one may
// have left loaded.
//
// swtpm serves one client at a time and has no resource manager, so OpenSocket
// assumes it is the only client: it flushes transient objects and sessions
// that a previous client (for example a crashed agent) left in the TPM.
func OpenSocket(network, addr string) (*TPM, error) {
	if network != "unix" && network != "tcp" {
		return nil, fmt.Errorf("tpm: open socket: network %q is not supported (use unix or tcp)", network)
	}
	c := &connTPM{network: network, addr: addr, timeout: DefaultCommandTimeout}
	// swtpm accepts a second connection but answers it only once the first
	// client has gone: bound the first commands tightly.
	c.limit = time.Now().Add(openTimeout)
	if err := c.dial(c.limit); err != nil {
		return nil, fmt.Errorf("tpm: open socket %s %s: %w (is swtpm running?)", network, addr, err)
	}
	t := New(c)
	if err := t.flushStale(); err != nil {
		c.Close()
		return nil, err
	}
	c.limit = time.Time{}
	return t, nil
}

// Close closes the transport. It waits for a running operation to finish.
func (t *TPM) Close() error {
	t.sem <- struct{}{}
	defer func() { <-t.sem }()
	if t.closed {
		return nil
	}
	t.closed = true
	if err := t.tr.Close(); err != nil {
		return fmt.Errorf("tpm: close: %w", err)
	}
	return nil
}

// lock takes the TPM for one operation. The caller must call unlock.
func (t *TPM) lock(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("tpm: waiting for the TPM: %w", err)
	}
	select {
	case t.sem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("tpm: waiting for the TPM: %w", ctx.Err())
	}
	if t.closed {
		<-t.sem
		return ErrClosed
	}
	if c, ok := t.tr.(*connTPM); ok {
		c.limit, _ = ctx.Deadline()
		if c.c == nil {
			// The connection broke during an earlier operation, which may
			// have left objects loaded: reconnect and flush them, as
			// OpenSocket does.
			if err := t.flushStale(); err != nil {
				t.unlock()
				return err
			}
		}
	}
	return nil
}

func (t *TPM) unlock() {
	if c, ok := t.tr.(*connTPM); ok {
		c.limit = time.Time{}
	}
	<-t.sem
}

// flushStale flushes every transient object and session in the TPM. It is only
// safe on a TPM that has no other client (swtpm).
func (t *TPM) flushStale() error {
	for _, first := range []tpm2.TPMHandle{0x80000000, 0x02000000, 0x03000000} {
		r, err := tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: uint32(first), PropertyCount: 64}.Execute(t.tr)
		if err != nil {
			return cmdErr("flush objects left in the TPM", "TPM2_GetCapability(handles)", err)
		}
		hs, err := r.CapabilityData.Data.Handles()
		if err != nil {
			return fmt.Errorf("tpm: flush objects left in the TPM: parse handle list: %w", err)
		}
		for _, h := range hs.Handle {
			if h>>24 != first>>24 {
				continue
			}
			if _, err := (tpm2.FlushContext{FlushHandle: h}).Execute(t.tr); err != nil {
				return cmdErr("flush objects left in the TPM", fmt.Sprintf("TPM2_FlushContext(%#x)", uint32(h)), err)
			}
		}
	}
	return nil
}

// flush flushes a transient handle; errors are ignored because the operation
// that loaded it has already succeeded or failed for its own reason, and a
// flush fails only when the TPM or the connection is gone.
func (t *TPM) flush(h tpm2.TPMHandle) {
	_, _ = tpm2.FlushContext{FlushHandle: h}.Execute(t.tr)
}

// cmdErr wraps an error from one TPM command with the operation, the command
// and, for the errors an operator can act on, what to do.
func cmdErr(op, cmd string, err error) error {
	if h := hint(err); h != "" {
		return fmt.Errorf("tpm: %s: %s: %w (%s)", op, cmd, err, h)
	}
	return fmt.Errorf("tpm: %s: %s: %w", op, cmd, err)
}

func hint(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, tpm2.TPMRCLockout):
		return "the TPM is in dictionary-attack lockout: wait for it to expire or reset it with tpm2_dictionarylockout --clear-lockout"
	case errors.Is(err, tpm2.TPMRCAuthFail), errors.Is(err, tpm2.TPMRCBadAuth):
		return "Plinth needs the owner and endorsement hierarchies to have an empty password"
	case errors.Is(err, tpm2.TPMRCHierarchy):
		return "a TPM hierarchy is disabled: enable the TPM's storage and endorsement hierarchies in firmware"
	case errors.Is(err, tpm2.TPMRCObjectMemory), errors.Is(err, tpm2.TPMRCSessionMemory), errors.Is(err, tpm2.TPMRCObjectHandles):
		return "the TPM is out of object or session slots: use /dev/tpmrm0 rather than /dev/tpm0, or stop other programs using the TPM"
	case errors.Is(err, tpm2.TPMRCRetry), errors.Is(err, tpm2.TPMRCYielded), errors.Is(err, tpm2.TPMRCTesting):
		return "the TPM is busy: retry"
	case errors.Is(err, tpm2.TPMRCInitialize):
		return "the TPM was not started: firmware (or swtpm --flags startup-clear) must send TPM2_Startup"
	case errors.As(err, &ne) && ne.Timeout():
		return "the TPM did not answer in time: check that swtpm is running and no other client holds it"
	}
	return ""
}
