package datastore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Get returns the value stored under key, or an error wrapping ErrNotFound.
// The CA journal and the trust bundle are kept this way, as opaque bytes
// their owners encode.
func (s *Store) Get(ctx context.Context, key string) ([]byte, error) {
	var v []byte
	err := s.r.QueryRowContext(ctx, `SELECT value FROM kv WHERE key = ?`, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: key %q", ErrNotFound, key)
	}
	if err != nil {
		return nil, fmt.Errorf("datastore: get %q: %w", key, err)
	}
	if v == nil {
		v = []byte{}
	}
	return v, nil
}

// Put stores value under key, replacing any previous value. A nil value is
// stored as an empty one.
func (s *Store) Put(ctx context.Context, key string, value []byte) error {
	if value == nil {
		value = []byte{}
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO kv (key, value) VALUES (?, ?)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value)
	if err != nil {
		return fmt.Errorf("datastore: put %q: %w", key, err)
	}
	return nil
}
