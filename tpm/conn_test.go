package tpm

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// answer reads 10-byte commands from c and answers each with a 14-byte
// response written in three pieces (on net.Pipe each piece is a separate
// read on the client side). With cut, it closes after half a response.
func answer(c net.Conn, cut bool) {
	defer c.Close()
	cmd := make([]byte, 10)
	for {
		if _, err := io.ReadFull(c, cmd); err != nil {
			return
		}
		rsp := binary.BigEndian.AppendUint16(nil, 0x8001)
		rsp = binary.BigEndian.AppendUint32(rsp, 14)
		rsp = binary.BigEndian.AppendUint32(rsp, 0)
		rsp = append(rsp, cmd[6:10]...) // echo the command code
		if cut {
			c.Write(rsp[:7])
			return
		}
		for _, part := range [][]byte{rsp[:3], rsp[3:11], rsp[11:]} {
			if _, err := c.Write(part); err != nil {
				return
			}
		}
	}
}

// fakeTPM serves answer on a unix socket; the connection number cutAt is cut.
func fakeTPM(t *testing.T, cutAt int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tpm.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { l.Close(); <-done })
	go func() {
		defer close(done)
		for n := 0; ; n++ {
			c, err := l.Accept()
			if err != nil {
				return
			}
			answer(c, n == cutAt)
		}
	}()
	return path
}

func command(code uint32) []byte {
	b := binary.BigEndian.AppendUint16(nil, 0x8001)
	b = binary.BigEndian.AppendUint32(b, 10)
	return binary.BigEndian.AppendUint32(b, code)
}

func TestConnShortReads(t *testing.T) {
	client, server := net.Pipe()
	go answer(server, false)
	c := &connTPM{c: client, timeout: 5 * time.Second}
	defer c.Close()
	for i := range uint32(3) {
		rsp, err := c.Send(command(0x100 + i))
		if err != nil {
			t.Fatal(err)
		}
		if len(rsp) != 14 || !bytes.Equal(rsp[10:], command(0x100 + i)[6:]) {
			t.Fatalf("response %x", rsp)
		}
	}
}

func TestConnReconnect(t *testing.T) {
	path := fakeTPM(t, 1)
	c := &connTPM{network: "unix", addr: path, timeout: 5 * time.Second}
	if err := c.dial(time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Send(command(0)); err != nil {
		t.Fatal(err)
	}
	// Drop the connection: the next dial gets a server that cuts its answer.
	c.c.Close()
	if _, err := c.Send(command(1)); err == nil {
		t.Fatal("Send on a closed connection succeeded")
	}
	if _, err := c.Send(command(2)); err == nil || !strings.Contains(err.Error(), "read response header: unexpected EOF") {
		t.Fatalf("cut response: err = %v", err)
	}
	// The broken stream is dropped; the next Send dials again.
	if rsp, err := c.Send(command(3)); err != nil || len(rsp) != 14 {
		t.Fatalf("after reconnect: %x, %v", rsp, err)
	}
}

func TestConnTimeout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tpm.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c := &connTPM{network: "unix", addr: path, timeout: 50 * time.Millisecond}
	if err := c.dial(time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Send(command(1)) // accepted by the kernel, never answered
	if h := hint(err); h != "the TPM did not answer in time: check that swtpm is running and no other client holds it" {
		t.Errorf("err = %v, hint %q", err, h)
	}
}
