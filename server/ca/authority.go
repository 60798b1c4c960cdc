package ca

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/plinth-id/plinth/hsm"
)

// Kind is a kind of authority.
type Kind string

const (
	X509 Kind = "x509"
	JWT  Kind = "jwt"
)

// ErrPrecondition is wrapped by a forced-rotation step that does not apply
// to the current state (nothing prepared to activate, tainting the active
// authority, revoking an authority that is not tainted).
var ErrPrecondition = errors.New("ca: precondition failed")

// AuthorityState describes one authority of a kind.
type AuthorityState struct {
	Kind Kind
	// ID is SPIRE's authority ID: the hex Subject Key Identifier of an X.509
	// authority's certificate, the key ID of a JWT authority.
	ID        string
	Status    Status
	Slot      string
	KeyID     string // "" once its slot's key was replaced
	NotBefore time.Time
	NotAfter  time.Time
	Tainted   bool
	// Provenance is the key manager's evidence of where the key lives, when
	// the manager can tell (hsm.Attester) and the key still exists.
	Provenance *hsm.Provenance
}

func authorityID(kind Kind, a *authority) string {
	if kind == JWT {
		return a.KID
	}
	cert, err := x509.ParseCertificate(a.CertDER)
	if err != nil {
		return ""
	}
	return hex.EncodeToString(cert.SubjectKeyId)
}

func (ca *CA) state(ctx context.Context, kind Kind, a *authority) AuthorityState {
	st := AuthorityState{Kind: kind, ID: authorityID(kind, a), Status: a.Status, Slot: a.Slot, KeyID: a.KeyID, NotBefore: a.NotBefore, NotAfter: a.NotAfter, Tainted: a.Tainted}
	if at, ok := ca.c.Keys.(hsm.Attester); ok && a.KeyID != "" {
		if p, err := at.Provenance(ctx, a.KeyID); err == nil {
			st.Provenance = p
		} else {
			ca.c.Log.Warn("could not read key provenance", "key_id", a.KeyID, "error", err)
		}
	}
	return st
}

// Authorities returns every authority of a kind: active, prepared and old
// ones still in the bundle, newest first.
func (ca *CA) Authorities(ctx context.Context, kind Kind) []AuthorityState {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	list := *ca.j.list(string(kind))
	out := make([]AuthorityState, 0, len(list))
	for i := len(list) - 1; i >= 0; i-- {
		out = append(out, ca.state(ctx, kind, list[i]))
	}
	return out
}

// Prepare generates a new authority in the free slot and publishes it in
// the bundle; it signs nothing until Activate. It fails with ErrPrecondition
// while another authority is prepared.
func (ca *CA) Prepare(ctx context.Context, kind Kind) (AuthorityState, error) {
	return ca.change(ctx, kind, func(j *journal, list *[]*authority) (*authority, error) {
		if p := find(*list, Prepared); p != nil {
			return nil, fmt.Errorf("%w: %s authority %s is already prepared; activate it first", ErrPrecondition, kind, authorityID(kind, p))
		}
		a, err := ca.newAuthority(ctx, j, string(kind), freeSlot(*list), ca.c.Clock())
		if err != nil {
			return nil, err
		}
		a.Status = Prepared
		*list = append(*list, a)
		return a, nil
	})
}

// Activate makes the prepared authority with the id the one that signs; the
// active one becomes old and stays in the bundle.
func (ca *CA) Activate(ctx context.Context, kind Kind, id string) (AuthorityState, error) {
	return ca.change(ctx, kind, func(_ *journal, list *[]*authority) (*authority, error) {
		p := find(*list, Prepared)
		if p == nil {
			return nil, fmt.Errorf("%w: no %s authority is prepared; prepare one first", ErrPrecondition, kind)
		}
		if id != "" && authorityID(kind, p) != id {
			return nil, fmt.Errorf("%w: %s authority %s is not the prepared one (%s)", ErrPrecondition, kind, id, authorityID(kind, p))
		}
		if a := find(*list, Active); a != nil {
			a.Status = Old
		}
		p.Status = Active
		return p, nil
	})
}

// Taint marks an old authority as tainted: agents replace everything it
// signed at once, instead of at half life. The active or prepared authority
// cannot be tainted.
func (ca *CA) Taint(ctx context.Context, kind Kind, id string) (AuthorityState, error) {
	return ca.change(ctx, kind, func(_ *journal, list *[]*authority) (*authority, error) {
		if kind == X509 && ca.c.Upstream != nil {
			return nil, fmt.Errorf("%w: an upstream authority signs this server's X.509 CA; the bundle holds only its roots, so a local authority cannot be tainted", ErrPrecondition)
		}
		a, err := oldAuthority(kind, *list, id)
		if err != nil {
			return nil, err
		}
		if a.Tainted {
			return nil, fmt.Errorf("%w: %s authority %s is already tainted", ErrPrecondition, kind, id)
		}
		a.Tainted = true
		return a, nil
	})
}

// Revoke removes a tainted old authority from the bundle: verifiers reject
// what it signed from then on.
func (ca *CA) Revoke(ctx context.Context, kind Kind, id string) (AuthorityState, error) {
	return ca.change(ctx, kind, func(_ *journal, list *[]*authority) (*authority, error) {
		a, err := oldAuthority(kind, *list, id)
		if err != nil {
			return nil, err
		}
		if !a.Tainted {
			return nil, fmt.Errorf("%w: %s authority %s is not tainted; taint it first so agents replace what it signed", ErrPrecondition, kind, id)
		}
		kept := (*list)[:0]
		for _, x := range *list {
			if x != a {
				kept = append(kept, x)
			}
		}
		*list = kept
		return a, nil
	})
}

func oldAuthority(kind Kind, list []*authority, id string) (*authority, error) {
	for _, a := range list {
		if authorityID(kind, a) != id {
			continue
		}
		if a.Status != Old {
			return nil, fmt.Errorf("%w: %s authority %s is %s; only an old authority can be tainted or revoked (activate its successor first)", ErrPrecondition, kind, id, a.Status)
		}
		return a, nil
	}
	return nil, fmt.Errorf("%w: no %s authority %s", ErrPrecondition, kind, id)
}

// change applies f to a copy of the journal and commits it.
func (ca *CA) change(ctx context.Context, kind Kind, f func(j *journal, list *[]*authority) (*authority, error)) (AuthorityState, error) {
	if kind != X509 && kind != JWT {
		return AuthorityState{}, fmt.Errorf("ca: unknown authority kind %q", kind)
	}
	ca.mu.Lock()
	defer ca.mu.Unlock()
	j := ca.j.clone()
	a, err := f(&j, j.list(string(kind)))
	if err != nil {
		ca.discard(ctx, j.created)
		return AuthorityState{}, err
	}
	if err := ca.commitLocked(ctx, j); err != nil {
		return AuthorityState{}, err
	}
	ca.c.Log.Info("CA authority changed by an admin", "kind", kind, "authority_id", authorityID(kind, a), "status", a.Status, "tainted", a.Tainted)
	return ca.state(ctx, kind, a), nil
}
