package datastore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// Store is the server's datastore: one SQLite database file.
//
// A Store is safe for concurrent use by many goroutines. Writes go through a
// single connection, one transaction at a time, so they never fail with
// "database is locked"; reads use a pool of read-only connections and, thanks
// to WAL mode, are not blocked by writes. Another process (or another Store)
// writing to the same file waits for the busy timeout before giving up.
type Store struct {
	w *sql.DB // one connection: every write transaction
	r *sql.DB // read-only connections

	// Statements on the CreateEntry path, prepared once on the writer.
	entryByID       *sql.Stmt
	entryByIdentity *sql.Stmt
	insertEntry     *sql.Stmt
	insertEvent     *sql.Stmt

	now func() time.Time // the clock; tests replace it
}

// busyTimeout is how long a connection waits for a lock held by another
// connection (another process on the same file) before failing.
const busyTimeout = 5 * time.Second

// Open opens the database at path, creating the file (0600) and its parent
// directory (0700) if they do not exist, and brings the schema up to date.
// A database written by a newer server, with a schema this code does not
// know, is refused.
func Open(ctx context.Context, path string) (*Store, error) {
	if path == "" {
		return nil, errors.New("datastore: empty database path")
	}
	path, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("datastore: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("datastore: create directory: %w", err)
	}
	// Create the file ourselves so it is private: SQLite would create it
	// with the umask's permissions, and its -wal and -shm files copy the
	// database file's mode.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("datastore: create database file: %w", err)
	}
	f.Close()

	s := &Store{now: time.Now}
	s.w, err = sql.Open("sqlite", dsn(path,
		"_txlock=immediate", // take the write lock at BEGIN, so busy_timeout applies
		"_pragma=journal_mode(WAL)",
		"_pragma=synchronous(NORMAL)",
		"_pragma=cache_size(-16000)", // 16 MB: the entry indexes stay in memory
		"_pragma=mmap_size(268435456)",
		"_pragma=foreign_keys(1)",
	))
	if err != nil {
		return nil, fmt.Errorf("datastore: open %s: %w", path, err)
	}
	s.w.SetMaxOpenConns(1)
	s.w.SetMaxIdleConns(1)
	s.w.SetConnMaxLifetime(0)
	s.w.SetConnMaxIdleTime(0)
	if err := migrate(ctx, s.w); err != nil {
		s.w.Close()
		return nil, err
	}

	s.r, err = sql.Open("sqlite", dsn(path,
		"_pragma=query_only(1)",
		"_pragma=foreign_keys(1)",
	))
	if err != nil {
		s.w.Close()
		return nil, fmt.Errorf("datastore: open %s: %w", path, err)
	}
	readers := max(4, runtime.GOMAXPROCS(0))
	s.r.SetMaxOpenConns(readers)
	s.r.SetMaxIdleConns(readers)

	if err := s.prepare(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// dsn returns the driver's data source name for the file at path, with the
// busy timeout and the given query parameters. Pragmas go in the DSN, not
// in an Exec after Open, so every pooled connection gets them.
func dsn(path string, params ...string) string {
	// A file: URI, so the path is escaped and may hold '?' or '#'.
	u := "file:" + (&url.URL{Path: path}).EscapedPath() +
		fmt.Sprintf("?_pragma=busy_timeout(%d)", busyTimeout.Milliseconds())
	for _, p := range params {
		u += "&" + p
	}
	return u
}

func (s *Store) prepare(ctx context.Context) error {
	for _, p := range []struct {
		stmt **sql.Stmt
		sql  string
	}{
		{&s.entryByID, selectEntryByID},
		{&s.entryByIdentity, selectEntryByIdentity},
		{&s.insertEntry, insertEntry},
		{&s.insertEvent, insertEntryEvent},
	} {
		st, err := s.w.PrepareContext(ctx, p.sql)
		if err != nil {
			return fmt.Errorf("datastore: prepare: %w", err)
		}
		*p.stmt = st
	}
	return nil
}

// Close closes the database. Calls in flight finish first; calls after
// Close fail.
func (s *Store) Close() error {
	for _, st := range []*sql.Stmt{s.entryByID, s.entryByIdentity, s.insertEntry, s.insertEvent} {
		if st != nil {
			st.Close()
		}
	}
	var errs []error
	if s.r != nil {
		errs = append(errs, s.r.Close())
	}
	// The writer closes last: closing the last connection checkpoints the
	// WAL back into the database file.
	errs = append(errs, s.w.Close())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("datastore: close: %w", err)
	}
	return nil
}

// write runs fn in one write transaction and commits it if fn returns nil.
func (s *Store) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("datastore: begin: %w", err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("datastore: commit: %w", err)
	}
	return nil
}

// scanner is a *sql.Row or *sql.Rows.
type scanner interface {
	Scan(dest ...any) error
}

// Lists and maps are stored as JSON text. An empty list or map is stored as
// "[]" or "{}" and read back as nil.

func encodeJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		// Only strings and string maps are encoded here; they cannot fail.
		panic(fmt.Sprintf("datastore: encode %T: %v", v, err))
	}
	return string(b)
}

func encodeList[T any](l []T) string {
	if len(l) == 0 {
		return "[]"
	}
	return encodeJSON(l)
}

func encodeMap(m map[string]string) string {
	if len(m) == 0 {
		return "{}"
	}
	return encodeJSON(m) // encoding/json sorts map keys
}

func decodeList[T any](s string) ([]T, error) {
	var l []T
	if err := json.Unmarshal([]byte(s), &l); err != nil {
		return nil, err
	}
	if len(l) == 0 {
		return nil, nil
	}
	return l, nil
}

func decodeMap(s string) (map[string]string, error) {
	var m map[string]string
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return nil, err
	}
	if len(m) == 0 {
		return nil, nil
	}
	return m, nil
}
