package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/plinth-id/plinth/adminapi"
)

// tpmEnroll enrolls endorsement keys: one by hash, certificate or public
// key, or many from a file of PEM certificates / public keys and hex hashes
// (one per line, # comments), all in one transaction.
func tpmEnroll(ctx context.Context, args []string) error {
	c := newAdminCmd("tpm enroll")
	hash := c.fs.String("ek-hash", "", "hex SHA-256 of the EK public key (as in the agent ID)")
	certFile := c.fs.String("ek-cert", "", "file holding an EK certificate (PEM or DER)")
	pubFile := c.fs.String("ek-pub", "", "file holding an EK public key (PEM or DER, PKIX)")
	file := c.fs.String("file", "", "file of many EKs: PEM certificates or public keys, and hex hashes one per line")
	comment := c.fs.String("comment", "", "a note kept with each enrollment (asset tag, rack)")
	if err := c.parse(args); err != nil {
		return err
	}
	var es []adminapi.Enrollment
	switch {
	case *hash != "":
		es = append(es, adminapi.Enrollment{EKHash: strings.ToLower(*hash)})
	case *certFile != "":
		der, err := readDER(*certFile, "CERTIFICATE")
		if err != nil {
			return err
		}
		es = append(es, adminapi.Enrollment{EKCert: der})
	case *pubFile != "":
		der, err := readDER(*pubFile, "PUBLIC KEY")
		if err != nil {
			return err
		}
		es = append(es, adminapi.Enrollment{EKPublic: der})
	case *file != "":
		var err error
		if es, err = readEnrollments(*file); err != nil {
			return err
		}
	default:
		return errors.New("give one of -ek-hash, -ek-cert, -ek-pub or -file")
	}
	for i := range es {
		es[i].Comment = *comment
	}
	conn, err := c.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	resp, err := adminapi.NewClient(conn).Enroll(ctx, &adminapi.EnrollRequest{Enrollments: es})
	if err != nil {
		return rpcErr(err)
	}
	if c.output == "json" {
		return json.NewEncoder(os.Stdout).Encode(resp)
	}
	fmt.Printf("Enrolled %d endorsement %s:\n", len(resp.Enrolled), plural(len(resp.Enrolled), "key", "keys"))
	for _, e := range resp.Enrolled {
		fmt.Printf("  %s\n", e.EKHash)
	}
	return nil
}

// readDER reads a file holding one PEM block of the given type, or DER.
func readDER(path, typ string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if blk, _ := pem.Decode(b); blk != nil {
		if blk.Type != typ {
			return nil, fmt.Errorf("%s holds a PEM %q block, want %q", path, blk.Type, typ)
		}
		return blk.Bytes, nil
	}
	return b, nil
}

// readEnrollments reads a bulk enrollment file.
func readEnrollments(path string) ([]adminapi.Enrollment, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var es []adminapi.Enrollment
	rest := b
	for {
		blk, r := pem.Decode(rest)
		if blk == nil {
			break
		}
		switch blk.Type {
		case "CERTIFICATE":
			es = append(es, adminapi.Enrollment{EKCert: blk.Bytes})
		case "PUBLIC KEY":
			es = append(es, adminapi.Enrollment{EKPublic: blk.Bytes})
		default:
			return nil, fmt.Errorf("%s: unexpected PEM block %q (want CERTIFICATE or PUBLIC KEY)", path, blk.Type)
		}
		rest = r
	}
	// Lines outside PEM blocks: hex hashes and comments.
	inPEM := false
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "-----BEGIN"):
			inPEM = true
		case strings.HasPrefix(line, "-----END"):
			inPEM = false
		case inPEM, line == "", strings.HasPrefix(line, "#"):
		default:
			es = append(es, adminapi.Enrollment{EKHash: strings.ToLower(strings.Fields(line)[0])})
		}
	}
	if len(es) == 0 {
		return nil, fmt.Errorf("%s holds no EK certificate, public key or hash", path)
	}
	return es, nil
}

func tpmUnenroll(ctx context.Context, args []string) error {
	c := newAdminCmd("tpm unenroll")
	hash := c.fs.String("ek-hash", "", "hex SHA-256 of the EK public key")
	if err := c.parse(args); err != nil {
		return err
	}
	if *hash == "" {
		return errors.New("-ek-hash is required")
	}
	conn, err := c.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := adminapi.NewClient(conn).Unenroll(ctx, strings.ToLower(*hash)); err != nil {
		return rpcErr(err)
	}
	if c.output == "json" {
		return json.NewEncoder(os.Stdout).Encode(map[string]string{"unenrolled": *hash})
	}
	fmt.Printf("Unenrolled %s; the node loses its identity at its next re-attestation.\n", *hash)
	return nil
}

func tpmList(ctx context.Context, args []string) error {
	c := newAdminCmd("tpm list")
	if err := c.parse(args); err != nil {
		return err
	}
	conn, err := c.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	resp, err := adminapi.NewClient(conn).List(ctx)
	if err != nil {
		return rpcErr(err)
	}
	if c.output == "json" {
		return json.NewEncoder(os.Stdout).Encode(resp)
	}
	fmt.Printf("%d enrolled endorsement %s\n", len(resp.Enrollments), plural(len(resp.Enrollments), "key", "keys"))
	for _, e := range resp.Enrollments {
		from := "hash"
		switch {
		case len(e.EKCert) > 0:
			from = "certificate"
		case len(e.EKPublic) > 0:
			from = "public key"
		}
		fmt.Printf("  %s  enrolled %s from %s", e.EKHash, time.Unix(e.CreatedAt, 0).UTC().Format(time.RFC3339), from)
		if e.Comment != "" {
			fmt.Printf("  %q", e.Comment)
		}
		fmt.Println()
	}
	return nil
}
