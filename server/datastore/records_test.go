package datastore

import (
	"errors"
	"reflect"
	"testing"
	"time"
)

func fullAgent() *Agent {
	return &Agent{
		ID:              "spiffe://example.org/spire/agent/tpm/abc",
		AttestationType: "tpm",
		SerialNumber:    "123456789012345678901234567890",
		NewSerialNumber: "42",
		ExpiresAt:       1_700_003_600,
		Selectors:       sel("tpm:ek_hash:abc", "tpm:manufacturer:id:1014"), // stored as given
		Banned:          true,
		CanReattest:     true,
		Evidence:        map[string]string{"ek_hash": "abc", "pcr7": "00ff"},
	}
}

func TestSetAgent(t *testing.T) {
	ctx := t.Context()
	s, clock, _ := openTest(t)
	a := fullAgent()
	if err := s.SetAgent(ctx, a); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a, fullAgent()) {
		t.Errorf("SetAgent modified its argument: %+v", a)
	}
	want := fullAgent()
	want.CreatedAt, want.UpdatedAt = t0.Unix(), t0.Unix()
	if got, err := s.GetAgent(ctx, a.ID); err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("GetAgent = %+v, %v\nwant %+v", got, err, want)
	}

	// Replacing keeps CreatedAt, even when the new value says otherwise.
	clock.advance(time.Hour)
	upd := &Agent{ID: a.ID, AttestationType: "tpm", SerialNumber: "2", CreatedAt: 99}
	if err := s.SetAgent(ctx, upd); err != nil {
		t.Fatal(err)
	}
	want = &Agent{ID: a.ID, AttestationType: "tpm", SerialNumber: "2", CreatedAt: t0.Unix(), UpdatedAt: t0.Add(time.Hour).Unix()}
	if got, err := s.GetAgent(ctx, a.ID); err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("GetAgent after update = %+v, %v\nwant %+v", got, err, want)
	}

	// A new agent may bring its CreatedAt (an import).
	if err := s.SetAgent(ctx, &Agent{ID: "spiffe://example.org/spire/agent/join_token/t", CreatedAt: 7}); err != nil {
		t.Fatal(err)
	}
	list, err := s.ListAgents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ID != "spiffe://example.org/spire/agent/join_token/t" || list[0].CreatedAt != 7 || list[1].ID != a.ID {
		t.Errorf("ListAgents = %+v", list)
	}
}

func TestSetAgentInvalid(t *testing.T) {
	s, _, _ := openTest(t)
	for _, tt := range []struct {
		name    string
		a       *Agent
		wantErr string
	}{
		{"nil", nil, "datastore: set agent: nil agent"},
		{"empty id", &Agent{AttestationType: "tpm"}, "datastore: set agent: empty id"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.SetAgent(t.Context(), tt.a); errString(err) != tt.wantErr {
				t.Errorf("SetAgent = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestAgentNotFound(t *testing.T) {
	ctx := t.Context()
	s, _, _ := openTest(t)
	if err := s.SetAgent(ctx, fullAgent()); err != nil {
		t.Fatal(err)
	}
	id := fullAgent().ID
	if err := s.DeleteAgent(ctx, id); err != nil {
		t.Fatal(err)
	}
	want := `datastore: not found: agent "spiffe://example.org/spire/agent/tpm/abc"`
	if err := s.DeleteAgent(ctx, id); !errors.Is(err, ErrNotFound) || err.Error() != want {
		t.Errorf("DeleteAgent = %v, want %q", err, want)
	}
	if _, err := s.GetAgent(ctx, id); !errors.Is(err, ErrNotFound) || err.Error() != want {
		t.Errorf("GetAgent = %v, want %q", err, want)
	}
	if list, err := s.ListAgents(ctx); err != nil || list != nil {
		t.Errorf("ListAgents = %+v, %v", list, err)
	}
}

func TestJoinTokens(t *testing.T) {
	ctx := t.Context()
	s, _, _ := openTest(t)
	exp := t0.Add(10 * time.Minute).Unix()
	for _, tok := range []*JoinToken{
		{Token: "good", ExpiresAt: exp, AgentAlias: "spiffe://example.org/node1"},
		{Token: "old", ExpiresAt: t0.Unix()},
	} {
		if err := s.CreateJoinToken(ctx, tok); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		name    string
		token   *JoinToken
		wantErr string
	}{
		{"duplicate", &JoinToken{Token: "good", ExpiresAt: exp}, "datastore: already exists: join token"},
		{"empty", &JoinToken{ExpiresAt: exp}, "datastore: create join token: empty token"},
		{"no expiry", &JoinToken{Token: "forever"}, "datastore: create join token: no expiry"},
		{"nil", nil, "datastore: create join token: nil token"},
	} {
		t.Run("create "+tt.name, func(t *testing.T) {
			if err := s.CreateJoinToken(ctx, tt.token); errString(err) != tt.wantErr {
				t.Errorf("CreateJoinToken = %v, want %q", err, tt.wantErr)
			}
		})
	}

	// Steps run in order: a token is used up by the first consume.
	for _, tt := range []struct {
		name    string
		token   string
		want    *JoinToken
		wantErr error
		msg     string
	}{
		{"good", "good", &JoinToken{Token: "good", ExpiresAt: exp, AgentAlias: "spiffe://example.org/node1"}, nil, ""},
		{"used", "good", nil, ErrNotFound, "datastore: not found: join token"},
		{"unknown", "nope", nil, ErrNotFound, "datastore: not found: join token"},
		{"expired", "old", nil, ErrExpired, "datastore: expired: join token expired at 2023-11-14T22:13:20Z"},
		{"expired is deleted", "old", nil, ErrNotFound, "datastore: not found: join token"},
	} {
		t.Run("consume "+tt.name, func(t *testing.T) {
			got, err := s.ConsumeJoinToken(ctx, tt.token, t0)
			if !reflect.DeepEqual(got, tt.want) || !errors.Is(err, tt.wantErr) || errString(err) != tt.msg {
				t.Errorf("ConsumeJoinToken(%q) = %+v, %v; want %+v, %q", tt.token, got, err, tt.want, tt.msg)
			}
		})
	}
}

func TestJoinTokenStoredHashed(t *testing.T) {
	ctx := t.Context()
	s, _, _ := openTest(t)
	if err := s.CreateJoinToken(ctx, &JoinToken{Token: "very-secret-token", ExpiresAt: 1}); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM join_tokens WHERE token_hash = ? OR agent_alias LIKE '%secret%'`, []byte("very-secret-token")).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Error("the token is stored in clear")
	}
}

func TestPruneJoinTokens(t *testing.T) {
	ctx := t.Context()
	s, _, _ := openTest(t)
	for i, tok := range []string{"a", "b", "c"} {
		if err := s.CreateJoinToken(ctx, &JoinToken{Token: tok, ExpiresAt: t0.Unix() + int64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := s.PruneJoinTokens(ctx, t0.Add(time.Second)); err != nil || n != 2 {
		t.Fatalf("PruneJoinTokens = %d, %v; want 2", n, err)
	}
	if _, err := s.ConsumeJoinToken(ctx, "c", t0); err != nil {
		t.Errorf("the unexpired token was pruned: %v", err)
	}
	if n, err := s.PruneJoinTokens(ctx, t0.Add(time.Hour)); err != nil || n != 0 {
		t.Fatalf("PruneJoinTokens = %d, %v; want 0", n, err)
	}
}

func TestKV(t *testing.T) {
	ctx := t.Context()
	s, _, _ := openTest(t)
	want := `datastore: not found: key "ca/journal"`
	if _, err := s.Get(ctx, "ca/journal"); !errors.Is(err, ErrNotFound) || err.Error() != want {
		t.Fatalf("Get = %v, want %q", err, want)
	}
	for _, tt := range []struct {
		name string
		put  []byte
		want []byte
	}{
		{"bytes", []byte{0, 0xff, 'a'}, []byte{0, 0xff, 'a'}},
		{"replace", []byte("second"), []byte("second")},
		{"empty", []byte{}, []byte{}},
		{"nil", nil, []byte{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.Put(ctx, "ca/journal", tt.put); err != nil {
				t.Fatal(err)
			}
			if got, err := s.Get(ctx, "ca/journal"); err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Get = %#v, %v; want %#v", got, err, tt.want)
			}
		})
	}
}

func TestAudit(t *testing.T) {
	ctx := t.Context()
	s, clock, _ := openTest(t)
	recs := []*AuditRecord{
		{Time: 10, Kind: "attest", Subject: "a", Decision: "allow", Reason: "tpm quote verified", Details: map[string]string{"pcr": "7"}},
		{Time: 10, Kind: "attest", Subject: "b", Decision: "deny", Reason: "pcr 7 mismatch"},
		{Kind: "ban", Subject: "a", Decision: "allow"}, // Time 0: now
		{Time: 5, Kind: "renew", Subject: "a", Decision: "allow"},
	}
	for _, r := range recs {
		if err := s.AppendAudit(ctx, r); err != nil {
			t.Fatal(err)
		}
		clock.advance(time.Second)
	}
	if recs[2].Time != 0 {
		t.Errorf("AppendAudit modified its argument")
	}
	stamped := *recs[2]
	stamped.Time = t0.Add(2 * time.Second).Unix()

	for _, tt := range []struct {
		name    string
		subject string
		limit   int
		want    []*AuditRecord
	}{
		// Newest means most recently appended, whatever Time says.
		{"all", "", 0, []*AuditRecord{recs[3], &stamped, recs[1], recs[0]}},
		{"all limited", "", 2, []*AuditRecord{recs[3], &stamped}},
		{"subject", "a", -1, []*AuditRecord{recs[3], &stamped, recs[0]}},
		{"subject limited", "a", 1, []*AuditRecord{recs[3]}},
		{"unknown subject", "z", 0, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.ListAudit(ctx, tt.subject, tt.limit)
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ListAudit(%q, %d) = %+v, %v\nwant %+v", tt.subject, tt.limit, got, err, tt.want)
			}
		})
	}
}

func TestUpdateAgent(t *testing.T) {
	ctx := t.Context()
	s, _, _ := openTest(t)
	id := fullAgent().ID

	// Absent: fn sees nil and may create.
	got, err := s.UpdateAgent(ctx, id, func(old *Agent) (*Agent, error) {
		if old != nil {
			t.Errorf("fn saw %+v, want nil for a missing agent", old)
		}
		return &Agent{ID: id, AttestationType: "join_token", SerialNumber: "1"}, nil
	})
	if err != nil || got.SerialNumber != "1" {
		t.Fatalf("UpdateAgent (create) = %+v, %v", got, err)
	}
	// fn's error is returned as is and nothing is written.
	errStop := errors.New("banned")
	if _, err := s.UpdateAgent(ctx, id, func(old *Agent) (*Agent, error) {
		old.SerialNumber = "2"
		return nil, errStop
	}); err != errStop {
		t.Fatalf("UpdateAgent = %v, want fn's error", err)
	}
	// (nil, nil) stores nothing.
	if _, err := s.UpdateAgent(ctx, id, func(*Agent) (*Agent, error) { return nil, nil }); err != nil {
		t.Fatal(err)
	}
	if a, _ := s.GetAgent(ctx, id); a.SerialNumber != "1" {
		t.Fatalf("serial = %q after a refused update, want 1", a.SerialNumber)
	}
	// Returning another ID is refused.
	if _, err := s.UpdateAgent(ctx, id, func(*Agent) (*Agent, error) { return &Agent{ID: "other"}, nil }); err == nil {
		t.Fatal("UpdateAgent accepted an agent with another ID")
	}
}
