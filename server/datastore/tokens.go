package datastore

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Join tokens are bearer secrets. The store keeps only their SHA-256, so a
// copy of the database does not hand out usable tokens; a fast hash is
// enough because tokens are long random strings, not passwords. The price:
// stored tokens cannot be listed back.

// CreateJoinToken stores a new join token. It fails with ErrAlreadyExists if
// the token is already stored. A token must expire: ExpiresAt 0 is refused.
func (s *Store) CreateJoinToken(ctx context.Context, t *JoinToken) error {
	switch {
	case t == nil:
		return errors.New("datastore: create join token: nil token")
	case t.Token == "":
		return errors.New("datastore: create join token: empty token")
	case t.ExpiresAt == 0:
		return errors.New("datastore: create join token: no expiry")
	}
	res, err := s.w.ExecContext(ctx, `INSERT INTO join_tokens (token_hash, expires_at, agent_alias)
		VALUES (?, ?, ?) ON CONFLICT DO NOTHING`,
		hashToken(t.Token), t.ExpiresAt, t.AgentAlias)
	if err != nil {
		return fmt.Errorf("datastore: create join token: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("datastore: create join token: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("%w: join token", ErrAlreadyExists)
	}
	return nil
}

// ConsumeJoinToken redeems token: it deletes it and returns it, in one
// statement, so two agents presenting the same token cannot both succeed.
// It fails with ErrNotFound if the token is unknown or already used, and
// with ErrExpired if it expired at or before now (the token is deleted all
// the same).
func (s *Store) ConsumeJoinToken(ctx context.Context, token string, now time.Time) (*JoinToken, error) {
	t := &JoinToken{Token: token}
	err := s.w.QueryRowContext(ctx, `DELETE FROM join_tokens WHERE token_hash = ?
		RETURNING expires_at, agent_alias`, hashToken(token)).Scan(&t.ExpiresAt, &t.AgentAlias)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: join token", ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("datastore: consume join token: %w", err)
	}
	if expiresAt := time.Unix(t.ExpiresAt, 0); !now.Before(expiresAt) {
		return nil, fmt.Errorf("%w: join token expired at %s", ErrExpired, expiresAt.UTC().Format(time.RFC3339))
	}
	return t, nil
}

// PruneJoinTokens deletes the tokens that expired at or before now and
// returns how many it deleted.
func (s *Store) PruneJoinTokens(ctx context.Context, now time.Time) (int, error) {
	res, err := s.w.ExecContext(ctx, `DELETE FROM join_tokens WHERE expires_at <= ?`, now.Unix())
	if err != nil {
		return 0, fmt.Errorf("datastore: prune join tokens: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("datastore: prune join tokens: %w", err)
	}
	return int(n), nil
}

func hashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}
