package datastore

import (
	"context"
	"errors"
	"fmt"
)

// AppendAudit appends r to the audit trail. A zero r.Time is set to now.
// r is not modified.
func (s *Store) AppendAudit(ctx context.Context, r *AuditRecord) error {
	if r == nil {
		return errors.New("datastore: append audit: nil record")
	}
	t := r.Time
	if t == 0 {
		t = s.now().Unix()
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO audit (time, kind, subject, decision, reason, details)
		VALUES (?, ?, ?, ?, ?, ?)`, t, r.Kind, r.Subject, r.Decision, r.Reason, encodeMap(r.Details))
	if err != nil {
		return fmt.Errorf("datastore: append audit: %w", err)
	}
	return nil
}

// ListAudit returns at most limit audit records about subject, or about
// every subject if subject is "", the most recently appended first. A limit
// of 0 or less means no limit.
func (s *Store) ListAudit(ctx context.Context, subject string, limit int) ([]*AuditRecord, error) {
	if limit <= 0 {
		limit = -1 // SQLite: no limit
	}
	const columns = `time, kind, subject, decision, reason, details`
	query, args := `SELECT `+columns+` FROM audit ORDER BY seq DESC LIMIT ?`, []any{limit}
	if subject != "" {
		query, args = `SELECT `+columns+` FROM audit WHERE subject = ? ORDER BY seq DESC LIMIT ?`, []any{subject, limit}
	}
	rows, err := s.r.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("datastore: list audit: %w", err)
	}
	defer rows.Close()
	var rs []*AuditRecord
	for rows.Next() {
		var (
			r       AuditRecord
			details string
		)
		if err := rows.Scan(&r.Time, &r.Kind, &r.Subject, &r.Decision, &r.Reason, &details); err != nil {
			return nil, fmt.Errorf("datastore: list audit: %w", err)
		}
		if r.Details, err = decodeMap(details); err != nil {
			return nil, fmt.Errorf("datastore: list audit: details: %w", err)
		}
		rs = append(rs, &r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("datastore: list audit: %w", err)
	}
	return rs, nil
}
