package datastore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"

	"github.com/google/uuid"

	"github.com/plinth-id/plinth/attestors"
)

const entryColumns = `id, spiffe_id, parent_id, selectors, x509_svid_ttl, jwt_svid_ttl,
	dns_names, federates_with, admin, downstream, expires_at, hint, store_svid,
	revision_number, created_at`

const (
	selectEntryByID       = `SELECT ` + entryColumns + ` FROM entries WHERE id = ?`
	selectEntryByIdentity = `SELECT ` + entryColumns + ` FROM entries
		WHERE spiffe_id = ? AND parent_id = ? AND selectors = ?`
	insertEntry = `INSERT INTO entries (` + entryColumns + `)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	insertEntryEvent = `INSERT INTO entry_events (entry_id) VALUES (?)`
)

// CreateEntry stores a new entry and returns it as stored: with an ID (a
// random UUID) if e has none, CreatedAt set to now if it is 0, revision 0,
// and its selectors sorted and deduplicated. e itself is not modified.
//
// If an entry with the same ID, or with the same SPIFFE ID, parent ID and
// selector set, exists, CreateEntry returns that entry and an error wrapping
// ErrAlreadyExists.
func (s *Store) CreateEntry(ctx context.Context, e *Entry) (*Entry, error) {
	var out *Entry
	err := s.write(ctx, func(tx *sql.Tx) error {
		var err error
		out, err = s.createEntry(ctx, tx, e)
		return err
	})
	if errors.Is(err, ErrAlreadyExists) {
		return out, err
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

// CreateEntries creates every entry of es in one transaction, much faster
// than one CreateEntry each. Results are per item, in the order of es, each
// as CreateEntry would return it: an item that fails (a duplicate, even of an
// earlier item of es) does not stop the others. If the transaction itself
// fails, every item reports that error and nothing is stored.
func (s *Store) CreateEntries(ctx context.Context, es []*Entry) ([]*Entry, []error) {
	out := make([]*Entry, len(es))
	errs := make([]error, len(es))
	if len(es) == 0 {
		return out, errs
	}
	if len(es) == 1 {
		// One item: its transaction is its savepoint (the common case: the
		// CLI creates one entry per call).
		var itemErr error
		err := s.write(ctx, func(tx *sql.Tx) error {
			out[0], itemErr = s.createEntry(ctx, tx, es[0])
			return itemErr
		})
		if itemErr == nil && err != nil {
			out[0] = nil
		}
		errs[0] = err
		return out, errs
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		for i, e := range es {
			// A savepoint per item, so a failure halfway through one
			// item leaves nothing of it behind.
			if _, err := tx.ExecContext(ctx, `SAVEPOINT entry`); err != nil {
				return fmt.Errorf("datastore: create entries: %w", err)
			}
			out[i], errs[i] = s.createEntry(ctx, tx, e)
			if errs[i] != nil {
				if _, err := tx.ExecContext(ctx, `ROLLBACK TO entry`); err != nil {
					return fmt.Errorf("datastore: create entries: %w", err)
				}
			}
			if _, err := tx.ExecContext(ctx, `RELEASE entry`); err != nil {
				return fmt.Errorf("datastore: create entries: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		for i := range es {
			out[i], errs[i] = nil, err
		}
	}
	return out, errs
}

// createEntry is CreateEntry inside tx.
func (s *Store) createEntry(ctx context.Context, tx *sql.Tx, e *Entry) (*Entry, error) {
	if e == nil {
		return nil, errors.New("datastore: create entry: nil entry")
	}
	e = cloneEntry(e)
	if e.ID == "" {
		// A fresh UUID cannot collide; the primary key would catch it
		// if it did.
		e.ID = uuid.NewString()
	} else {
		existing, err := scanEntry(tx.StmtContext(ctx, s.entryByID).QueryRowContext(ctx, e.ID))
		switch {
		case err == nil:
			return existing, fmt.Errorf("%w: entry with id %q", ErrAlreadyExists, e.ID)
		case !errors.Is(err, sql.ErrNoRows):
			return nil, fmt.Errorf("datastore: create entry: %w", err)
		}
	}
	if e.CreatedAt == 0 {
		e.CreatedAt = s.now().Unix()
	}
	e.RevisionNumber = 0

	selectors := encodeSelectors(e.Selectors)
	existing, err := scanEntry(tx.StmtContext(ctx, s.entryByIdentity).QueryRowContext(ctx, e.SPIFFEID, e.ParentID, selectors))
	switch {
	case err == nil:
		return existing, duplicateError(existing)
	case !errors.Is(err, sql.ErrNoRows):
		return nil, fmt.Errorf("datastore: create entry: %w", err)
	}

	if _, err := tx.StmtContext(ctx, s.insertEntry).ExecContext(ctx, entryArgs(e, selectors)...); err != nil {
		return nil, fmt.Errorf("datastore: create entry: %w", err)
	}
	if err := s.appendEvent(ctx, tx, e.ID); err != nil {
		return nil, err
	}
	return e, nil
}

// GetEntry returns the entry with the given ID, or an error wrapping
// ErrNotFound.
func (s *Store) GetEntry(ctx context.Context, id string) (*Entry, error) {
	e, err := scanEntry(s.r.QueryRowContext(ctx, selectEntryByID, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: entry %q", ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("datastore: get entry %q: %w", id, err)
	}
	return e, nil
}

// UpdateEntry replaces every field of the entry with ID e.ID by those of e,
// except CreatedAt, which is kept, and RevisionNumber, which becomes the
// stored revision plus one. It returns the entry as stored. It fails with
// ErrNotFound if there is no such entry, and with ErrAlreadyExists if the
// new SPIFFE ID, parent ID and selectors are those of another entry.
//
// The revision of e is not compared with the stored one: the last update
// wins.
func (s *Store) UpdateEntry(ctx context.Context, e *Entry) (*Entry, error) {
	if e == nil {
		return nil, errors.New("datastore: update entry: nil entry")
	}
	e = cloneEntry(e)
	selectors := encodeSelectors(e.Selectors)
	err := s.write(ctx, func(tx *sql.Tx) error {
		old, err := scanEntry(tx.StmtContext(ctx, s.entryByID).QueryRowContext(ctx, e.ID))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: entry %q", ErrNotFound, e.ID)
		}
		if err != nil {
			return fmt.Errorf("datastore: update entry %q: %w", e.ID, err)
		}
		other, err := scanEntry(tx.StmtContext(ctx, s.entryByIdentity).QueryRowContext(ctx, e.SPIFFEID, e.ParentID, selectors))
		switch {
		case err == nil && other.ID != e.ID:
			return duplicateError(other)
		case err != nil && !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("datastore: update entry %q: %w", e.ID, err)
		}
		e.CreatedAt = old.CreatedAt
		e.RevisionNumber = old.RevisionNumber + 1
		args := entryArgs(e, selectors)
		if _, err := tx.ExecContext(ctx, `UPDATE entries SET
			spiffe_id = ?2, parent_id = ?3, selectors = ?4, x509_svid_ttl = ?5,
			jwt_svid_ttl = ?6, dns_names = ?7, federates_with = ?8, admin = ?9,
			downstream = ?10, expires_at = ?11, hint = ?12, store_svid = ?13,
			revision_number = ?14, created_at = ?15
			WHERE id = ?1`, args...); err != nil {
			return fmt.Errorf("datastore: update entry %q: %w", e.ID, err)
		}
		return s.appendEvent(ctx, tx, e.ID)
	})
	if err != nil {
		return nil, err
	}
	return e, nil
}

// DeleteEntry deletes the entry with the given ID and returns it, or fails
// with ErrNotFound.
func (s *Store) DeleteEntry(ctx context.Context, id string) (*Entry, error) {
	var deleted *Entry
	err := s.write(ctx, func(tx *sql.Tx) error {
		var err error
		deleted, err = scanEntry(tx.QueryRowContext(ctx, `DELETE FROM entries WHERE id = ? RETURNING `+entryColumns, id))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: entry %q", ErrNotFound, id)
		}
		if err != nil {
			return fmt.Errorf("datastore: delete entry %q: %w", id, err)
		}
		return s.appendEvent(ctx, tx, id)
	})
	if err != nil {
		return nil, err
	}
	return deleted, nil
}

// ListEntries returns every entry, ordered by ID.
//
// To keep a cache in step with the store, read LastEntryEvent first, then
// ListEntries, then apply EntryEventsSince that sequence number: a change
// made between the two reads is then seen twice, which is harmless, rather
// than never.
func (s *Store) ListEntries(ctx context.Context) ([]*Entry, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+entryColumns+` FROM entries ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("datastore: list entries: %w", err)
	}
	defer rows.Close()
	var es []*Entry
	for rows.Next() {
		e, err := scanEntry(rows)
		if err != nil {
			return nil, fmt.Errorf("datastore: list entries: %w", err)
		}
		es = append(es, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("datastore: list entries: %w", err)
	}
	return es, nil
}

// EntryEventsSince returns the entry events with a sequence number greater
// than seq, oldest first. Every create, update and delete of an entry adds
// one event, in the transaction that makes the change; an event says which
// entry changed, and GetEntry says how (ErrNotFound: it was deleted).
// Pass 0 for every event.
func (s *Store) EntryEventsSince(ctx context.Context, seq int64) ([]EntryEvent, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT seq, entry_id FROM entry_events WHERE seq > ? ORDER BY seq`, seq)
	if err != nil {
		return nil, fmt.Errorf("datastore: list entry events: %w", err)
	}
	defer rows.Close()
	var evs []EntryEvent
	for rows.Next() {
		var ev EntryEvent
		if err := rows.Scan(&ev.Seq, &ev.EntryID); err != nil {
			return nil, fmt.Errorf("datastore: list entry events: %w", err)
		}
		evs = append(evs, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("datastore: list entry events: %w", err)
	}
	return evs, nil
}

// LastEntryEvent returns the sequence number of the newest entry event, or
// 0 if there is none.
func (s *Store) LastEntryEvent(ctx context.Context) (int64, error) {
	var seq int64
	if err := s.r.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM entry_events`).Scan(&seq); err != nil {
		return 0, fmt.Errorf("datastore: last entry event: %w", err)
	}
	return seq, nil
}

func (s *Store) appendEvent(ctx context.Context, tx *sql.Tx, entryID string) error {
	if _, err := tx.StmtContext(ctx, s.insertEvent).ExecContext(ctx, entryID); err != nil {
		return fmt.Errorf("datastore: append entry event: %w", err)
	}
	return nil
}

func duplicateError(existing *Entry) error {
	return fmt.Errorf("%w: entry %q has the same spiffe id %q, parent id %q and selectors",
		ErrAlreadyExists, existing.ID, existing.SPIFFEID, existing.ParentID)
}

// cloneEntry returns a deep copy of e as the store keeps it: selectors
// sorted and deduplicated, empty lists nil.
func cloneEntry(e *Entry) *Entry {
	c := *e
	c.Selectors = cloneList(e.Selectors)
	if c.Selectors != nil {
		c.Selectors = attestors.SortSelectors(c.Selectors)
	}
	c.DNSNames = cloneList(e.DNSNames)
	c.FederatesWith = cloneList(e.FederatesWith)
	return &c
}

// cloneList returns a copy of l, or nil if l is empty.
func cloneList[T any](l []T) []T {
	if len(l) == 0 {
		return nil
	}
	return slices.Clone(l)
}

// entryArgs returns the values of entryColumns for e.
func entryArgs(e *Entry, selectors string) []any {
	return []any{
		e.ID, e.SPIFFEID, e.ParentID, selectors, e.X509SVIDTTL, e.JWTSVIDTTL,
		encodeList(e.DNSNames), encodeList(e.FederatesWith), e.Admin, e.Downstream,
		e.ExpiresAt, e.Hint, e.StoreSVID, e.RevisionNumber, e.CreatedAt,
	}
}

func scanEntry(sc scanner) (*Entry, error) {
	var (
		e                                  Entry
		selectors, dnsNames, federatesWith string
		err                                error
	)
	if err := sc.Scan(&e.ID, &e.SPIFFEID, &e.ParentID, &selectors, &e.X509SVIDTTL, &e.JWTSVIDTTL,
		&dnsNames, &federatesWith, &e.Admin, &e.Downstream, &e.ExpiresAt, &e.Hint, &e.StoreSVID,
		&e.RevisionNumber, &e.CreatedAt); err != nil {
		return nil, err
	}
	if e.Selectors, err = decodeSelectors(selectors); err != nil {
		return nil, fmt.Errorf("entry %q: selectors: %w", e.ID, err)
	}
	if e.DNSNames, err = decodeList[string](dnsNames); err != nil {
		return nil, fmt.Errorf("entry %q: dns names: %w", e.ID, err)
	}
	if e.FederatesWith, err = decodeList[string](federatesWith); err != nil {
		return nil, fmt.Errorf("entry %q: federates with: %w", e.ID, err)
	}
	return &e, nil
}

// encodeSelectors returns ss as JSON [["type","value"],…], in the order
// given. For an entry's selectors, sorted and deduplicated, this is the
// canonical form of the set, the one the entries_identity index compares.
func encodeSelectors(ss []attestors.Selector) string {
	pairs := make([][2]string, len(ss))
	for i, s := range ss {
		pairs[i] = [2]string{s.Type, s.Value}
	}
	return encodeList(pairs)
}

func decodeSelectors(s string) ([]attestors.Selector, error) {
	pairs, err := decodeList[[2]string](s)
	if err != nil || pairs == nil {
		return nil, err
	}
	ss := make([]attestors.Selector, len(pairs))
	for i, p := range pairs {
		ss[i] = attestors.Selector{Type: p[0], Value: p[1]}
	}
	return ss, nil
}
