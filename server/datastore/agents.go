package datastore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

const agentColumns = `id, attestation_type, serial_number, new_serial_number, expires_at, selectors,
	banned, can_reattest, evidence, created_at, updated_at`

// SetAgent creates or replaces the agent with ID a.ID. On creation,
// CreatedAt is a.CreatedAt, or now if that is 0; on replacement the stored
// CreatedAt is kept. UpdatedAt is set to now either way. a is not modified.
func (s *Store) SetAgent(ctx context.Context, a *Agent) error {
	return s.setAgent(ctx, s.w, a)
}

// execer is a *sql.DB or a *sql.Tx.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

func (s *Store) setAgent(ctx context.Context, db execer, a *Agent) error {
	switch {
	case a == nil:
		return errors.New("datastore: set agent: nil agent")
	case a.ID == "":
		return errors.New("datastore: set agent: empty id")
	}
	now := s.now().Unix()
	createdAt := a.CreatedAt
	if createdAt == 0 {
		createdAt = now
	}
	_, err := db.ExecContext(ctx, `INSERT INTO agents (`+agentColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET
			attestation_type = excluded.attestation_type,
			serial_number = excluded.serial_number,
			new_serial_number = excluded.new_serial_number,
			expires_at = excluded.expires_at,
			selectors = excluded.selectors,
			banned = excluded.banned,
			can_reattest = excluded.can_reattest,
			evidence = excluded.evidence,
			updated_at = excluded.updated_at`,
		a.ID, a.AttestationType, a.SerialNumber, a.NewSerialNumber, a.ExpiresAt, encodeSelectors(a.Selectors),
		a.Banned, a.CanReattest, encodeMap(a.Evidence), createdAt, now)
	if err != nil {
		return fmt.Errorf("datastore: set agent %q: %w", a.ID, err)
	}
	return nil
}

// UpdateAgent reads the agent with id (nil when there is none), lets fn
// decide what to store, and stores it, all in one write transaction: a
// concurrent ban or eviction cannot be lost between the read and the write.
// fn returning (nil, nil) stores nothing; an error from fn is returned as is.
func (s *Store) UpdateAgent(ctx context.Context, id string, fn func(old *Agent) (*Agent, error)) (*Agent, error) {
	var out *Agent
	err := s.write(ctx, func(tx *sql.Tx) error {
		old, err := scanAgent(tx.QueryRowContext(ctx, `SELECT `+agentColumns+` FROM agents WHERE id = ?`, id))
		if errors.Is(err, sql.ErrNoRows) {
			old, err = nil, nil
		}
		if err != nil {
			return fmt.Errorf("datastore: update agent %q: %w", id, err)
		}
		next, err := fn(old)
		if err != nil || next == nil {
			return err
		}
		if next.ID != id {
			return fmt.Errorf("datastore: update agent %q: fn returned agent %q", id, next.ID)
		}
		if old != nil {
			next.CreatedAt = old.CreatedAt
		}
		out = next
		return s.setAgent(ctx, tx, next)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// GetAgent returns the agent with the given SPIFFE ID, or an error wrapping
// ErrNotFound.
func (s *Store) GetAgent(ctx context.Context, id string) (*Agent, error) {
	a, err := scanAgent(s.r.QueryRowContext(ctx, `SELECT `+agentColumns+` FROM agents WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: agent %q", ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("datastore: get agent %q: %w", id, err)
	}
	return a, nil
}

// ListAgents returns every agent, ordered by ID.
func (s *Store) ListAgents(ctx context.Context) ([]*Agent, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+agentColumns+` FROM agents ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("datastore: list agents: %w", err)
	}
	defer rows.Close()
	var as []*Agent
	for rows.Next() {
		a, err := scanAgent(rows)
		if err != nil {
			return nil, fmt.Errorf("datastore: list agents: %w", err)
		}
		as = append(as, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("datastore: list agents: %w", err)
	}
	return as, nil
}

// DeleteAgent deletes the agent with the given SPIFFE ID, or fails with
// ErrNotFound.
func (s *Store) DeleteAgent(ctx context.Context, id string) error {
	res, err := s.w.ExecContext(ctx, `DELETE FROM agents WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("datastore: delete agent %q: %w", id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("datastore: delete agent %q: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("%w: agent %q", ErrNotFound, id)
	}
	return nil
}

func scanAgent(sc scanner) (*Agent, error) {
	var (
		a                   Agent
		selectors, evidence string
		err                 error
	)
	if err := sc.Scan(&a.ID, &a.AttestationType, &a.SerialNumber, &a.NewSerialNumber, &a.ExpiresAt, &selectors,
		&a.Banned, &a.CanReattest, &evidence, &a.CreatedAt, &a.UpdatedAt); err != nil {
		return nil, err
	}
	if a.Selectors, err = decodeSelectors(selectors); err != nil {
		return nil, fmt.Errorf("agent %q: selectors: %w", a.ID, err)
	}
	if a.Evidence, err = decodeMap(evidence); err != nil {
		return nil, fmt.Errorf("agent %q: evidence: %w", a.ID, err)
	}
	return &a, nil
}
