package datastore

import (
	"errors"

	"github.com/plinth-id/plinth/attestors"
)

// Errors callers branch on. Every error the store returns for a missing,
// duplicate, expired or stale row wraps one of these.
var (
	ErrNotFound      = errors.New("datastore: not found")
	ErrAlreadyExists = errors.New("datastore: already exists")
	ErrExpired       = errors.New("datastore: expired")
)

// Entry is a registration entry. IDs are SPIFFE IDs in canonical string
// form; times are Unix seconds; TTLs are seconds (0 = server default).
type Entry struct {
	ID             string
	SPIFFEID       string
	ParentID       string
	Selectors      []attestors.Selector // sorted, deduplicated (attestors.SortSelectors)
	X509SVIDTTL    int32
	JWTSVIDTTL     int32
	DNSNames       []string
	FederatesWith  []string
	Admin          bool
	Downstream     bool
	ExpiresAt      int64 // 0 = never
	Hint           string
	StoreSVID      bool
	RevisionNumber int64 // starts at 0, +1 on every update
	CreatedAt      int64
}

// EntryEvent records one change to an entry, in commit order. Seq grows
// monotonically; a server that did not make the change (several servers on
// one database) catches up by reading events after the last Seq it saw.
type EntryEvent struct {
	Seq     int64
	EntryID string
}

// Agent is an attested node.
type Agent struct {
	ID              string // SPIFFE ID
	AttestationType string
	SerialNumber    string // serial of the current agent SVID (decimal)
	// NewSerialNumber is the serial of a renewed SVID not used yet; it
	// becomes SerialNumber the first time the agent presents it.
	NewSerialNumber string
	ExpiresAt       int64 // NotAfter of the current agent SVID
	Selectors       []attestors.Selector
	Banned          bool
	CanReattest     bool
	Evidence        map[string]string
	CreatedAt       int64
	UpdatedAt       int64
}

// JoinToken is a single-use bootstrap secret.
type JoinToken struct {
	Token     string
	ExpiresAt int64
	// AgentAlias, when set, is the SPIFFE ID registered as an alias of the
	// agent that redeems the token (`token generate -spiffeID`).
	AgentAlias string
}

// AuditRecord is one security-relevant decision (an attestation, a ban, a
// token redeemed). Never holds key material or secrets.
type AuditRecord struct {
	Time     int64
	Kind     string // e.g. "attest", "renew", "ban", "evict"
	Subject  string // agent SPIFFE ID or token hash
	Decision string // "allow" | "deny"
	Reason   string
	Details  map[string]string
}
