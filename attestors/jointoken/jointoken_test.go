package jointoken_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/plinth-id/plinth/attestors"
	"github.com/plinth-id/plinth/attestors/jointoken"
	"github.com/plinth-id/plinth/server/datastore"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var (
	td = spiffeid.RequireTrustDomainFromString("example.org")
	t0 = time.Unix(1_900_000_000, 0)
)

// redeemFrom redeems tokens from the datastore at the time now returns, as
// plinth-server does.
func redeemFrom(store *datastore.Store, now func() time.Time) jointoken.Redeem {
	return func(ctx context.Context, token string) error {
		_, err := store.ConsumeJoinToken(ctx, token, now())
		switch {
		case errors.Is(err, datastore.ErrNotFound):
			return jointoken.ErrUnknown
		case errors.Is(err, datastore.ErrExpired):
			return jointoken.ErrExpired
		}
		return err
	}
}

func TestAttest(t *testing.T) {
	ctx := t.Context()
	store, err := datastore.Open(ctx, filepath.Join(t.TempDir(), "ds.sqlite3"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	for _, jt := range []*datastore.JoinToken{
		{Token: "good", ExpiresAt: t0.Add(time.Minute).Unix()},
		{Token: "used", ExpiresAt: t0.Add(time.Minute).Unix()},
		{Token: "stale", ExpiresAt: t0.Unix()},
		{Token: strings.Repeat("a", 256), ExpiresAt: t0.Add(time.Minute).Unix()},
	} {
		if err := store.CreateJoinToken(ctx, jt); err != nil {
			t.Fatal(err)
		}
	}
	s := jointoken.NewServer(td, redeemFrom(store, func() time.Time { return t0 }))
	if _, err := s.Attest(ctx, []byte("used"), nil); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name    string
		token   string
		wantID  string
		wantErr string
	}{
		{name: "empty", token: "", wantErr: "attestation rejected: join token is empty"},
		{name: "slash", token: "a/b", wantErr: "attestation rejected: join token is malformed"},
		{name: "space", token: "a b", wantErr: "attestation rejected: join token is malformed"},
		{name: "newline", token: "good\n", wantErr: "attestation rejected: join token is malformed"},
		{name: "too long", token: strings.Repeat("a", 257), wantErr: "attestation rejected: join token is malformed"},
		{name: "not a path segment", token: "tok$en",
			wantErr: "attestation rejected: join token is malformed: path segment characters are limited to letters, numbers, dots, dashes, and underscores"},
		{name: "dot segment", token: "..", wantErr: "attestation rejected: join token is malformed: path cannot contain dot segments"},
		{name: "unknown", token: "nope", wantErr: "attestation rejected: join token does not exist or has already been used"},
		{name: "already used", token: "used", wantErr: "attestation rejected: join token does not exist or has already been used"},
		{name: "expired", token: "stale", wantErr: "attestation rejected: join token expired"},
		{name: "success", token: "good", wantID: "spiffe://example.org/spire/agent/join_token/good"},
		{name: "success with the longest token", token: strings.Repeat("a", 256),
			wantID: "spiffe://example.org/spire/agent/join_token/" + strings.Repeat("a", 256)},
		{name: "single use", token: "good", wantErr: "attestation rejected: join token does not exist or has already been used"},
	} {
		t.Run(c.name, func(t *testing.T) {
			res, err := s.Attest(ctx, []byte(c.token), nil)
			if c.wantErr != "" {
				if err == nil || err.Error() != c.wantErr {
					t.Fatalf("Attest error = %v, want %q", err, c.wantErr)
				}
				if !errors.Is(err, attestors.ErrRejected) {
					t.Error("the error does not wrap attestors.ErrRejected")
				}
				if res != nil {
					t.Error("a result was returned with the error")
				}
				return
			}
			if err != nil {
				t.Fatalf("Attest: %v", err)
			}
			if res.AgentID.String() != c.wantID || res.CanReattest || len(res.Selectors) != 0 {
				t.Errorf("result = %v, reattest %v, selectors %v; want %s, false, none", res.AgentID, res.CanReattest, res.Selectors, c.wantID)
			}
		})
	}
}

// An internal failure of the token store is not a rejection: the server
// answers Internal, not PermissionDenied.
func TestAttestRedeemFails(t *testing.T) {
	boom := errors.New("datastore: consume join token: database is locked")
	s := jointoken.NewServer(td, func(context.Context, string) error { return boom })
	_, err := s.Attest(t.Context(), []byte("tok"), nil)
	if err != boom {
		t.Fatalf("Attest error = %v, want %v unchanged", err, boom)
	}
}

func TestAgent(t *testing.T) {
	ctx := t.Context()
	if got, err := (&jointoken.Agent{Token: "tok"}).Payload(ctx, nil); err != nil || string(got) != "tok" {
		t.Errorf("Payload = %q, %v; want tok", got, err)
	}
	_, err := (&jointoken.Agent{}).Payload(ctx, nil)
	if want := "jointoken: no join token configured; pass -joinToken or set join_token in the agent config"; err == nil || err.Error() != want {
		t.Errorf("Payload without a token: error = %v, want %q", err, want)
	}
	_, err = (&jointoken.Agent{Token: "tok"}).Respond(ctx, []byte("challenge"))
	if want := "jointoken: join token attestation has no challenge"; err == nil || err.Error() != want {
		t.Errorf("Respond: error = %v, want %q", err, want)
	}
	if (&jointoken.Agent{}).Name() != "join_token" || jointoken.NewServer(td, nil).Name() != "join_token" {
		t.Error("Name is not join_token")
	}
}
