package tpm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// maxResponse bounds a response's declared size. TPM responses are at most a
// few KiB (MAX_RESPONSE_SIZE is 4096 on the reference implementation).
const maxResponse = 1 << 16

// connTPM sends raw TPM commands over one persistent stream connection
// (swtpm's data channel). It is used under the TPM's lock only.
type connTPM struct {
	network, addr string
	timeout       time.Duration // per command
	limit         time.Time     // the current operation's context deadline, if any

	c net.Conn // nil after an I/O error; the next Send dials again
}

func (c *connTPM) dial(deadline time.Time) error {
	d := net.Dialer{Deadline: deadline}
	conn, err := d.Dial(c.network, c.addr)
	if err != nil {
		return err
	}
	c.c = conn
	return nil
}

func (c *connTPM) deadline() time.Time {
	d := time.Now().Add(c.timeout)
	if !c.limit.IsZero() && c.limit.Before(d) {
		d = c.limit
	}
	return d
}

// Send writes one command and reads exactly one response: the 10-byte header,
// then the rest of the size it declares. Reading by the declared size (not one
// Read into a fixed buffer) survives short reads on a stream.
func (c *connTPM) Send(cmd []byte) ([]byte, error) {
	d := c.deadline()
	if c.c == nil {
		if err := c.dial(d); err != nil {
			return nil, fmt.Errorf("reconnect to %s %s: %w", c.network, c.addr, err)
		}
	}
	for delay := time.Millisecond; ; delay *= 2 {
		rsp, err := c.roundTrip(cmd, d)
		if err != nil {
			// The stream may hold part of a response now: never reuse it.
			c.c.Close()
			c.c = nil
			return nil, err
		}
		// TPM_RC_RETRY, TPM_RC_YIELDED and TPM_RC_TESTING mean the TPM did
		// not start the command: send the same bytes again (as go-tpm's
		// device transport does).
		switch binary.BigEndian.Uint32(rsp[6:10]) {
		case rcRetry, rcYielded, rcTesting:
			if time.Now().Add(delay).Before(d) {
				time.Sleep(delay)
				continue
			}
		}
		return rsp, nil
	}
}

const (
	rcYielded = 0x908
	rcTesting = 0x90a
	rcRetry   = 0x922
)

func (c *connTPM) roundTrip(cmd []byte, d time.Time) ([]byte, error) {
	if err := c.c.SetDeadline(d); err != nil {
		return nil, err
	}
	if _, err := c.c.Write(cmd); err != nil {
		return nil, fmt.Errorf("send command: %w", err)
	}
	hdr := make([]byte, 10) // tag(2) size(4) response code(4)
	if _, err := io.ReadFull(c.c, hdr); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("read response header: %w", err)
	}
	n := binary.BigEndian.Uint32(hdr[2:6])
	if n < 10 || n > maxResponse {
		return nil, fmt.Errorf("response declares %d bytes", n)
	}
	rsp := make([]byte, n)
	copy(rsp, hdr)
	if _, err := io.ReadFull(c.c, rsp[10:]); err != nil {
		return nil, fmt.Errorf("read response body: %w", err)
	}
	return rsp, nil
}

func (c *connTPM) Close() error {
	if c.c == nil {
		return nil
	}
	err := c.c.Close()
	c.c = nil
	return err
}
