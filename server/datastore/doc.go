// Package datastore is the server's one SQL store: registration entries,
// attested agents, join tokens, small key/value records (the CA journal, the
// trust bundle) and the audit trail, in a SQLite database file.
//
// # Opening
//
// Open takes the path of the database file. It creates the file (mode 0600)
// and its directory (0700) if needed and brings the schema up to date:
//
//	s, err := datastore.Open(ctx, "/var/lib/plinth/datastore.sqlite3")
//	if err != nil {
//		return err
//	}
//	defer s.Close()
//
// The schema is a numbered list of migrations. A database records the steps
// it has had in its schema_migrations table, and Open applies the missing
// ones, each in its own transaction, so opening is safe to repeat and safe
// to interrupt. A database written by a newer plinth-server is refused,
// never downgraded.
//
// # Entries
//
// CreateEntry stores an entry and gives it an ID when it has none. An entry
// is identified by its SPIFFE ID, parent ID and set of selectors: the order
// and repetition of the selectors do not matter, and creating a second entry
// with the same three fails with ErrAlreadyExists and returns the first.
// The check is an index lookup, so creating does not slow down as the
// table grows. Use CreateEntries to create many entries in
// one transaction.
//
//	e, err := s.CreateEntry(ctx, &datastore.Entry{
//		SPIFFEID:  "spiffe://example.org/web",
//		ParentID:  "spiffe://example.org/spire/agent/tpm/abc",
//		Selectors: []attestors.Selector{{Type: "unix", Value: "uid:1000"}},
//	})
//	if errors.Is(err, datastore.ErrAlreadyExists) {
//		// e is the entry that already exists.
//	}
//
// The store does not filter entries: the server holds all of them in memory
// and answers agents from there. It fills its cache and keeps it current
// with entry events. Every create, update and delete appends an event, in
// the same transaction, with a sequence number that only grows:
//
//	last, _ := s.LastEntryEvent(ctx)   // 1. where the list starts
//	all, _ := s.ListEntries(ctx)       // 2. the snapshot
//	// … later, and again and again:
//	evs, _ := s.EntryEventsSince(ctx, last)
//	for _, ev := range evs {
//		e, err := s.GetEntry(ctx, ev.EntryID)
//		// err wraps ErrNotFound: the entry was deleted, drop it;
//		// otherwise put e in the cache, replacing any older copy.
//		last = ev.Seq
//	}
//
// Reading the sequence number before the list means a change that lands
// between the two is replayed, not lost.
//
// # Agents, join tokens, records, audit
//
// SetAgent creates or replaces an agent and keeps its CreatedAt. Join tokens
// are single use: ConsumeJoinToken deletes the token as it returns it, so
// two agents racing with one token cannot both win, and an expired token is
// refused (ErrExpired) and deleted. Only a hash of each token is stored.
// Get and Put keep opaque bytes under a key. AppendAudit and ListAudit keep
// the audit trail, read newest first.
//
// # Errors
//
// Errors start with "datastore: ". A missing row wraps ErrNotFound, a
// duplicate ErrAlreadyExists and an expired token ErrExpired; test them with
// errors.Is.
//
// # Concurrency
//
// A Store is safe for use by many goroutines. Writes are serialized on one
// connection, each in its own transaction; reads use a pool of read-only
// connections and are not blocked by writes (SQLite's WAL mode). Values
// passed in are never modified; values returned are the caller's.
package datastore
