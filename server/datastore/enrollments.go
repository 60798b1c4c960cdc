package datastore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// Enrollment is a TPM endorsement key an operator trusts.
type Enrollment struct {
	EKHash    string // hex SHA-256 of the EK public key (PKIX DER)
	EKPublic  []byte // PKIX DER, optional
	EKCert    []byte // DER, optional
	Comment   string
	CreatedAt int64
}

// Enroll stores enrollments in one transaction: all or none. An EK hash
// already enrolled is an error wrapping ErrAlreadyExists, naming it.
func (s *Store) Enroll(ctx context.Context, es []*Enrollment) error {
	now := s.now().Unix()
	return s.write(ctx, func(tx *sql.Tx) error {
		for _, e := range es {
			if e.EKHash == "" {
				return errors.New("datastore: enroll: empty EK hash")
			}
			created := e.CreatedAt
			if created == 0 {
				created = now
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO tpm_enrollments (ek_hash, ek_public, ek_cert, comment, created_at) VALUES (?, ?, ?, ?, ?)`,
				e.EKHash, e.EKPublic, e.EKCert, e.Comment, created)
			if err != nil {
				if strings.Contains(err.Error(), "UNIQUE constraint failed") {
					return fmt.Errorf("%w: EK %s is already enrolled", ErrAlreadyExists, e.EKHash)
				}
				return fmt.Errorf("datastore: enroll EK %s: %w", e.EKHash, err)
			}
		}
		return nil
	})
}

// Unenroll removes an enrolled EK; an unknown hash wraps ErrNotFound.
func (s *Store) Unenroll(ctx context.Context, ekHash string) error {
	res, err := s.w.ExecContext(ctx, `DELETE FROM tpm_enrollments WHERE ek_hash = ?`, ekHash)
	if err != nil {
		return fmt.Errorf("datastore: unenroll EK %s: %w", ekHash, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("%w: EK %s is not enrolled", ErrNotFound, ekHash)
	}
	return nil
}

// Enrolled reports whether the EK hash is enrolled.
func (s *Store) Enrolled(ctx context.Context, ekHash string) (bool, error) {
	var one int
	err := s.r.QueryRowContext(ctx, `SELECT 1 FROM tpm_enrollments WHERE ek_hash = ?`, ekHash).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("datastore: look up EK %s: %w", ekHash, err)
	}
	return true, nil
}

// ListEnrollments returns every enrollment, ordered by EK hash.
func (s *Store) ListEnrollments(ctx context.Context) ([]*Enrollment, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT ek_hash, ek_public, ek_cert, comment, created_at FROM tpm_enrollments ORDER BY ek_hash`)
	if err != nil {
		return nil, fmt.Errorf("datastore: list enrollments: %w", err)
	}
	defer rows.Close()
	var out []*Enrollment
	for rows.Next() {
		e := &Enrollment{}
		if err := rows.Scan(&e.EKHash, &e.EKPublic, &e.EKCert, &e.Comment, &e.CreatedAt); err != nil {
			return nil, fmt.Errorf("datastore: list enrollments: %w", err)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}
