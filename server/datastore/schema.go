package datastore

import (
	"context"
	"database/sql"
	"fmt"
)

// migrations is the schema, one step per element: migrations[i] brings the
// database from version i to version i+1. Append new steps; never edit or
// reorder a step that has shipped.
var migrations = []string{
	// 1: the initial schema.
	`
CREATE TABLE entries (
	id              TEXT PRIMARY KEY,
	spiffe_id       TEXT NOT NULL,
	parent_id       TEXT NOT NULL,
	-- canonical selector set: JSON [["type","value"],…], sorted, no duplicates
	selectors       TEXT NOT NULL,
	x509_svid_ttl   INTEGER NOT NULL,
	jwt_svid_ttl    INTEGER NOT NULL,
	dns_names       TEXT NOT NULL, -- JSON list
	federates_with  TEXT NOT NULL, -- JSON list
	admin           INTEGER NOT NULL,
	downstream      INTEGER NOT NULL,
	expires_at      INTEGER NOT NULL,
	hint            TEXT NOT NULL,
	store_svid      INTEGER NOT NULL,
	revision_number INTEGER NOT NULL,
	created_at      INTEGER NOT NULL
) STRICT;

-- One entry per (SPIFFE ID, parent, selector set); also the index behind the
-- duplicate check in CreateEntry.
CREATE UNIQUE INDEX entries_identity ON entries (spiffe_id, parent_id, selectors);

-- AUTOINCREMENT: a sequence number is never reused, even after the newest
-- events are deleted.
CREATE TABLE entry_events (
	seq      INTEGER PRIMARY KEY AUTOINCREMENT,
	entry_id TEXT NOT NULL
) STRICT;

CREATE TABLE agents (
	id               TEXT PRIMARY KEY,
	attestation_type TEXT NOT NULL,
	serial_number    TEXT NOT NULL,
	new_serial_number TEXT NOT NULL,
	expires_at       INTEGER NOT NULL,
	selectors        TEXT NOT NULL, -- JSON [["type","value"],…], as given
	banned           INTEGER NOT NULL,
	can_reattest     INTEGER NOT NULL,
	evidence         TEXT NOT NULL, -- JSON object
	created_at       INTEGER NOT NULL,
	updated_at       INTEGER NOT NULL
) STRICT;

-- Join tokens are stored as their SHA-256, never in clear.
CREATE TABLE join_tokens (
	token_hash  BLOB PRIMARY KEY,
	expires_at  INTEGER NOT NULL,
	agent_alias TEXT NOT NULL
) STRICT;

CREATE TABLE kv (
	key   TEXT PRIMARY KEY,
	value BLOB NOT NULL
) STRICT;

CREATE TABLE audit (
	seq      INTEGER PRIMARY KEY AUTOINCREMENT,
	time     INTEGER NOT NULL,
	kind     TEXT NOT NULL,
	subject  TEXT NOT NULL,
	decision TEXT NOT NULL,
	reason   TEXT NOT NULL,
	details  TEXT NOT NULL -- JSON object
) STRICT;

CREATE INDEX audit_subject ON audit (subject, seq);
`,
	// 2: TPM endorsement keys enrolled by operators.
	`
CREATE TABLE tpm_enrollments (
	ek_hash    TEXT PRIMARY KEY, -- hex SHA-256 of the EK public key (PKIX DER)
	ek_public  BLOB,             -- PKIX DER, when enrolled from a key or certificate
	ek_cert    BLOB,             -- DER, when enrolled from a certificate
	comment    TEXT NOT NULL,
	created_at INTEGER NOT NULL
) STRICT;
`,
}

// migrate applies the missing steps of migrations, each in its own
// transaction together with its row in schema_migrations. Two processes
// opening one new database at once are serialized by the write lock each
// transaction takes at BEGIN, and the second finds the work done.
func migrate(ctx context.Context, db *sql.DB) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
	version    INTEGER PRIMARY KEY,
	applied_at INTEGER NOT NULL DEFAULT (unixepoch())
) STRICT`); err != nil {
		return fmt.Errorf("datastore: create schema_migrations: %w", err)
	}
	for i, step := range migrations {
		version := i + 1
		if err := migrateStep(ctx, db, version, step); err != nil {
			return err
		}
	}
	return nil
}

func migrateStep(ctx context.Context, db *sql.DB, version int, step string) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("datastore: migrate to version %d: %w", version, err)
	}
	defer tx.Rollback()
	current, err := schemaVersion(ctx, tx)
	if err != nil {
		return err
	}
	if current > len(migrations) {
		return fmt.Errorf("datastore: database schema version %d is newer than this server supports (%d); upgrade plinth-server",
			current, len(migrations))
	}
	if current >= version {
		return nil
	}
	if _, err := tx.ExecContext(ctx, step); err != nil {
		return fmt.Errorf("datastore: migrate to version %d: %w", version, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version) VALUES (?)`, version); err != nil {
		return fmt.Errorf("datastore: migrate to version %d: %w", version, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("datastore: migrate to version %d: %w", version, err)
	}
	return nil
}

func schemaVersion(ctx context.Context, tx *sql.Tx) (int, error) {
	var v int
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, fmt.Errorf("datastore: read schema version: %w", err)
	}
	return v, nil
}
