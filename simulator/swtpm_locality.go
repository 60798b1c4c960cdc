package simulator

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// swtpm's control channel protocol (swtpm's include/swtpm/tpm_ioctl.h and
// man page swtpm_ioctls(3)): a request is the command code as a big-endian
// uint32 followed by the command's request structure, big-endian; the
// response starts with a big-endian uint32 TPM result (0 on success).
const (
	ctrlSetLocality uint32 = 0x05 // CMD_SET_LOCALITY; request: ptm_loc, one byte, locality 0-4
)

// tpm2StartupClear is TPM2_Startup(TPM_SU_CLEAR): tag TPM_ST_NO_SESSIONS,
// size 12, TPM_CC_Startup, TPM_SU_CLEAR.
var tpm2StartupClear = []byte{0x80, 0x01, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x00, 0x01, 0x44, 0x00, 0x00}

// startAt starts the TPM at s.locality: CMD_SET_LOCALITY, TPM2_Startup(CLEAR)
// on the data channel, CMD_SET_LOCALITY 0. swtpm runs without startup-clear
// for this; the locality it keeps is used for every later data command, so it
// is set back to 0.
func (s *SWTPM) startAt(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.waitCtrl(ctx); err != nil {
		return err
	}
	if err := s.setLocality(ctx, s.locality); err != nil {
		return err
	}
	if err := s.startup(ctx); err != nil {
		return err
	}
	return s.setLocality(ctx, 0)
}

// waitCtrl connects until swtpm accepts on its control socket.
func (s *SWTPM) waitCtrl(ctx context.Context) error {
	delay := time.Millisecond
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, "unix", s.Ctrl)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("simulator: start swtpm: swtpm exited: %s", s.Output())
		case <-ctx.Done():
			return fmt.Errorf("simulator: start swtpm: no control channel on %s: %w (last error: %v)", s.Ctrl, ctx.Err(), err)
		case <-time.After(delay):
		}
		delay = min(2*delay, 50*time.Millisecond)
	}
}

// setLocality sends CMD_SET_LOCALITY.
func (s *SWTPM) setLocality(ctx context.Context, locality int) error {
	res, err := exchange(ctx, s.Ctrl, binary.BigEndian.AppendUint32(nil, ctrlSetLocality), []byte{byte(locality)}, 4)
	if err != nil {
		return fmt.Errorf("simulator: start swtpm: set locality %d (CMD_SET_LOCALITY on %s): %w", locality, s.Ctrl, err)
	}
	if rc := binary.BigEndian.Uint32(res); rc != 0 {
		return fmt.Errorf("simulator: start swtpm: set locality %d: swtpm answered CMD_SET_LOCALITY with result %#x", locality, rc)
	}
	return nil
}

// startup sends TPM2_Startup(CLEAR) on the data channel.
func (s *SWTPM) startup(ctx context.Context) error {
	res, err := exchange(ctx, s.Socket, tpm2StartupClear, nil, 10)
	if err != nil {
		return fmt.Errorf("simulator: start swtpm: TPM2_Startup at locality %d: %w", s.locality, err)
	}
	if rc := binary.BigEndian.Uint32(res[6:]); rc != 0 {
		return fmt.Errorf("simulator: start swtpm: TPM2_Startup at locality %d: TPM response code %#x", s.locality, rc)
	}
	return nil
}

// exchange writes head and body in one write on a new connection to the unix
// socket path and reads an answer of exactly n bytes. swtpm reads a control
// command in one read, so the request must not be split.
func exchange(ctx context.Context, path string, head, body []byte, n int) ([]byte, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	if _, err := c.Write(bytes.Join([][]byte{head, body}, nil)); err != nil {
		return nil, err
	}
	res := make([]byte, n)
	if _, err := io.ReadFull(c, res); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("short answer: %w", err)
		}
		return nil, err
	}
	return res, nil
}
