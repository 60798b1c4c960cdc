package awskms_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/plinth-id/plinth/hsm"
	"github.com/plinth-id/plinth/hsm/awskms"
	"github.com/plinth-id/plinth/hsm/awskms/kmstest"
	"github.com/plinth-id/plinth/hsm/hsmtest"
)

// config returns the configuration of a Manager on s with the prefix and
// server ID of name.
func config(s *kmstest.Server, name string) awskms.Config {
	name = regexp.MustCompile(`[^a-zA-Z0-9_-]+`).ReplaceAllString(name, "-")
	return awskms.Config{
		Region:      kmstest.Region,
		Endpoint:    s.URL,
		AliasPrefix: "alias/plinth/" + name + "/",
		ServerID:    name,
		Credentials: kmstest.Credentials(),
		MaxBackoff:  time.Millisecond,
		Log:         slog.New(slog.DiscardHandler),
	}
}

func newManager(t testing.TB, c awskms.Config) *awskms.Manager {
	t.Helper()
	m, err := awskms.New(context.Background(), c)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return m
}

func newServer(t testing.TB) *kmstest.Server {
	s := kmstest.New()
	t.Cleanup(s.Close)
	return s
}

// TestContract runs the contract suite with every manager on one fake KMS,
// each under its own alias prefix, as servers sharing an account would be.
func TestContract(t *testing.T) {
	s := newServer(t)
	open := func(t *testing.T) hsm.KeyManager { return newManager(t, config(s, t.Name())) }
	hsmtest.Run(t, open, open)
}

// orphans returns the keys on s that are neither behind an alias nor
// pending deletion: leaked keys.
func orphans(s *kmstest.Server) []string {
	var ids []string
	for _, k := range s.Keys() {
		if len(k.Aliases) == 0 && k.State != kmstest.PendingDeletion {
			ids = append(ids, k.ARN)
		}
	}
	return ids
}

func TestGenerateKeyLeaksNothing(t *testing.T) {
	tests := []struct {
		name    string
		replace bool // GenerateKey replaces a key rather than creating the first
		faults  []kmstest.Fault
		wantErr string // regexp
		// left is whether the new key stays behind for Sweep.
		left bool
	}{{
		name:    "CreateKey denied",
		faults:  []kmstest.Fault{{Op: "CreateKey", Err: "AccessDeniedException", Times: 1}},
		wantErr: `^awskms: could not generate key "x509-ca-A": kms:CreateKey denied: allow kms:CreateKey to this server's AWS identity, in its IAM policy and in the key policy: operation error KMS: CreateKey, .*AccessDeniedException: User: arn:aws:iam::111122223333:user/kmstest is not authorized to perform: kms:CreateKey because no identity-based policy allows the kms:CreateKey action$`,
	}, {
		name:    "GetPublicKey fails",
		faults:  []kmstest.Fault{{Op: "GetPublicKey", Err: "KMSInternalException", Times: -1}},
		wantErr: `^awskms: could not generate key "x509-ca-A": kms:GetPublicKey on arn:aws:kms:us-east-1:111122223333:key/[-0-9a-f]+: operation error KMS: GetPublicKey, exceeded maximum number of attempts, 5, .*KMSInternalException: An internal error occurred.; the new key arn:\S+ is scheduled for deletion$`,
	}, {
		name:    "DescribeKey denied",
		faults:  []kmstest.Fault{{Op: "DescribeKey", Err: "AccessDeniedException", Times: 1}},
		wantErr: `^awskms: could not generate key "x509-ca-A": kms:DescribeKey on alias/plinth/t/s/x509-ca-A denied: .*; the new key arn:\S+ is scheduled for deletion$`,
	}, {
		name:    "CreateAlias denied",
		faults:  []kmstest.Fault{{Op: "CreateAlias", Err: "AccessDeniedException", Times: 1}},
		wantErr: `^awskms: could not generate key "x509-ca-A": kms:CreateAlias on alias/plinth/t/s/x509-ca-A denied: allow kms:CreateAlias .*; the new key arn:\S+ is scheduled for deletion$`,
	}, {
		name:    "UpdateAlias denied",
		replace: true,
		faults:  []kmstest.Fault{{Op: "UpdateAlias", Err: "AccessDeniedException", Times: 1}},
		wantErr: `^awskms: could not generate key "x509-ca-A": kms:UpdateAlias on alias/plinth/t/s/x509-ca-A denied: .*; the new key arn:\S+ is scheduled for deletion$`,
	}, {
		name:    "UpdateAlias throttled",
		replace: true,
		faults:  []kmstest.Fault{{Op: "UpdateAlias", Err: "ThrottlingException", Times: -1}},
		wantErr: `^awskms: could not generate key "x509-ca-A": kms:UpdateAlias on alias/plinth/t/s/x509-ca-A throttled by KMS on all 5 attempts: .*; the new key arn:\S+ is scheduled for deletion$`,
	}, {
		name:    "UpdateAlias and clean-up fail",
		replace: true,
		faults: []kmstest.Fault{
			{Op: "UpdateAlias", Err: "AccessDeniedException", Times: 1},
			{Op: "ScheduleKeyDeletion", Err: "AccessDeniedException", Times: 1},
		},
		wantErr: `^awskms: could not generate key "x509-ca-A": kms:UpdateAlias on \S+ denied: .*; the new key (arn:\S+) is left for Sweep, as kms:ScheduleKeyDeletion on (arn:\S+) denied: .*$`,
		left:    true,
	}, {
		name:    "UpdateAlias and the look at the alias fail",
		replace: true,
		faults: []kmstest.Fault{
			{Op: "UpdateAlias", Err: "KMSInternalException", Times: -1},
			{Op: "DescribeKey", Err: "AccessDeniedException", Skip: 1, Times: 1},
		},
		wantErr: `^awskms: could not generate key "x509-ca-A": kms:UpdateAlias on \S+: operation error KMS: UpdateAlias, exceeded maximum number of attempts, 5, .*; the new key (arn:\S+) is left for Sweep, as KMS cannot say whether the alias points to it: kms:DescribeKey on alias/plinth/t/s/x509-ca-A denied: .*$`,
		left:    true,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			s := newServer(t)
			c := config(s, "t/s")
			c.AliasPrefix = "alias/plinth/t/s/"
			m := newManager(t, c)
			var old hsm.Key
			if tt.replace {
				var err error
				if old, err = m.GenerateKey(ctx, "x509-ca-A", hsm.ECP256); err != nil {
					t.Fatalf("GenerateKey: %v", err)
				}
			}
			for _, f := range tt.faults {
				s.Inject(f)
			}
			_, err := m.GenerateKey(ctx, "x509-ca-A", hsm.ECP384)
			if err == nil || !regexp.MustCompile(tt.wantErr).MatchString(err.Error()) {
				t.Fatalf("GenerateKey: got error %v, want one matching %s", err, tt.wantErr)
			}

			// The ID holds the old key, or none.
			k, err := m.GetKey(ctx, "x509-ca-A")
			switch {
			case old == nil && !errors.Is(err, hsm.ErrNotFound):
				t.Errorf("GetKey after the failed GenerateKey: got %v, want an error wrapping hsm.ErrNotFound", err)
			case old != nil && err != nil:
				t.Errorf("GetKey after the failed GenerateKey: %v", err)
			case old != nil && !old.Public().(*ecdsa.PublicKey).Equal(k.Public()):
				t.Errorf("GetKey after the failed GenerateKey: not the old key")
			}

			// Nothing leaked, or what is left Sweep removes.
			leaked := orphans(s)
			if !tt.left && len(leaked) > 0 {
				t.Fatalf("keys leaked: %v", leaked)
			}
			if tt.left && len(leaked) != 1 {
				t.Fatalf("got %d keys left for Sweep, want 1: %v", len(leaked), leaked)
			}
			if !tt.left {
				return
			}
			c.Clock = func() time.Time { return time.Now().Add(2 * time.Hour) }
			n, err := newManager(t, c).Sweep(ctx)
			if err != nil || n != 1 {
				t.Fatalf("Sweep: got %d, %v; want 1, nil", n, err)
			}
			if leaked := orphans(s); len(leaked) > 0 {
				t.Fatalf("keys leaked after Sweep: %v", leaked)
			}
		})
	}
}

// TestGenerateKeyAliasMovedDespiteError checks that GenerateKey looks at the
// alias before discarding the new key: KMS moved it and lost the response.
func TestGenerateKeyAliasMovedDespiteError(t *testing.T) {
	ctx := t.Context()
	s := newServer(t)
	m := newManager(t, config(s, t.Name()))
	old, err := m.GenerateKey(ctx, "x509-ca-A", hsm.ECP256)
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	oldInfo, _ := s.Key("alias/plinth/TestGenerateKeyAliasMovedDespiteError/x509-ca-A")
	s.Inject(kmstest.Fault{Op: "UpdateAlias", Err: "KMSInternalException", Times: -1, After: true})
	k, err := m.GenerateKey(ctx, "x509-ca-A", hsm.ECP256)
	if err != nil {
		t.Fatalf("GenerateKey, with UpdateAlias's responses lost: %v", err)
	}
	got, err := m.GetKey(ctx, "x509-ca-A")
	if err != nil {
		t.Fatalf("GetKey: %v", err)
	}
	if !got.Public().(*ecdsa.PublicKey).Equal(k.Public()) || got.Public().(*ecdsa.PublicKey).Equal(old.Public()) {
		t.Fatal("GetKey did not return the new key")
	}
	if info, _ := s.Key(oldInfo.ID); info.State != kmstest.PendingDeletion {
		t.Errorf("the replaced key is %s, want PendingDeletion", info.State)
	}
	if leaked := orphans(s); len(leaked) > 0 {
		t.Fatalf("keys leaked: %v", leaked)
	}
}

func TestGenerateKeyTagsAndRetires(t *testing.T) {
	ctx := t.Context()
	s := newServer(t)
	c := config(s, "tags")
	m := newManager(t, c)
	if _, err := m.GenerateKey(ctx, "jwt-A", hsm.ECP256); err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	first, _ := s.Key(c.AliasPrefix + "jwt-A")
	want := map[string]string{awskms.TagServer: "tags", awskms.TagKeyID: "jwt-A"}
	if !maps.Equal(first.Tags, want) {
		t.Errorf("tags: got %v, want %v", first.Tags, want)
	}
	if _, err := m.GenerateKey(ctx, "jwt-A", hsm.RSA2048); err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	first, _ = s.Key(first.ID)
	if first.State != kmstest.PendingDeletion || len(first.Aliases) != 0 {
		t.Errorf("replaced key: state %s, aliases %v; want PendingDeletion and none", first.State, first.Aliases)
	}
	if d := time.Until(first.DeletionDate); d < 7*24*time.Hour-time.Minute || d > 7*24*time.Hour {
		t.Errorf("replaced key is deleted in %v, want 7 days", d)
	}

	// A key the server did not create is left alone when replaced.
	foreign, err := s.AddKey("ECC_NIST_P256", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetAlias(c.AliasPrefix+"jwt-A", foreign.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := m.GenerateKey(ctx, "jwt-A", hsm.ECP256); err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	if foreign, _ = s.Key(foreign.ID); foreign.State != kmstest.Enabled {
		t.Errorf("a replaced key the server did not create is %s, want Enabled", foreign.State)
	}
}

func TestDeleteKey(t *testing.T) {
	ctx := t.Context()
	s := newServer(t)
	c := config(s, "delete")
	m := newManager(t, c)
	k, err := m.GenerateKey(ctx, "x509-ca-B", hsm.ECP256)
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	info, _ := s.Key(c.AliasPrefix + "x509-ca-B")
	if err := m.DeleteKey(ctx, "x509-ca-B"); err != nil {
		t.Fatalf("DeleteKey: %v", err)
	}
	if info, _ = s.Key(info.ID); info.State != kmstest.PendingDeletion || len(info.Aliases) != 0 {
		t.Errorf("deleted key: state %s, aliases %v; want PendingDeletion and none", info.State, info.Aliases)
	}
	_, err = k.Sign(rand.Reader, digest("deleted"), crypto.SHA256)
	if !errors.Is(err, hsm.ErrNotFound) {
		t.Errorf("Sign with a deleted key: got %v, want an error wrapping hsm.ErrNotFound", err)
	}

	// An alias whose key was scheduled for deletion behind the server's back
	// is deleted too.
	if _, err := m.GenerateKey(ctx, "x509-ca-B", hsm.ECP256); err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	if err := s.SetKeyState(c.AliasPrefix+"x509-ca-B", kmstest.PendingDeletion); err != nil {
		t.Fatal(err)
	}
	if err := m.DeleteKey(ctx, "x509-ca-B"); err != nil {
		t.Fatalf("DeleteKey of a key pending deletion: %v", err)
	}
	if _, ok := s.Aliases()[c.AliasPrefix+"x509-ca-B"]; ok {
		t.Error("DeleteKey of a key pending deletion left its alias")
	}

	// A failed ScheduleKeyDeletion leaves the alias, to try again.
	if _, err := m.GenerateKey(ctx, "x509-ca-B", hsm.ECP256); err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	s.Fail("ScheduleKeyDeletion", "AccessDeniedException", 1)
	err = m.DeleteKey(ctx, "x509-ca-B")
	const want = `^awskms: could not delete key "x509-ca-B": kms:ScheduleKeyDeletion on arn:\S+ denied: allow kms:ScheduleKeyDeletion to this server's AWS identity, in its IAM policy and in the key policy: operation error KMS: ScheduleKeyDeletion, .*$`
	if err == nil || !regexp.MustCompile(want).MatchString(err.Error()) {
		t.Fatalf("DeleteKey: got error %v, want one matching %s", err, want)
	}
	if _, err := m.GetKey(ctx, "x509-ca-B"); err != nil {
		t.Fatalf("GetKey after a failed DeleteKey: %v", err)
	}
	if err := m.DeleteKey(ctx, "x509-ca-B"); err != nil {
		t.Fatalf("DeleteKey again: %v", err)
	}
	if leaked := orphans(s); len(leaked) > 0 {
		t.Fatalf("keys leaked: %v", leaked)
	}
}

func TestProvenance(t *testing.T) {
	ctx := t.Context()
	s := newServer(t)
	c := config(s, "provenance")
	m := newManager(t, c)
	if _, err := m.GenerateKey(ctx, "x509-ca-A", hsm.ECP384); err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	info, _ := s.Key(c.AliasPrefix + "x509-ca-A")
	imported, err := s.AddKey("RSA_2048", "EXTERNAL", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetAlias(c.AliasPrefix+"imported", imported.ID); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		id   string
		want hsm.Provenance
	}{{
		id: "x509-ca-A",
		want: hsm.Provenance{
			Backend: "aws_kms", Location: info.ARN, GeneratedInside: true, NonExtractable: true,
			Attributes: map[string]string{
				"Origin": "AWS_KMS", "KeySpec": "ECC_NIST_P384", "KeyUsage": "SIGN_VERIFY",
				"KeyManager": "CUSTOMER", "KeyState": "Enabled", "MultiRegion": "false",
			},
		},
	}, {
		id: "imported",
		want: hsm.Provenance{
			Backend: "aws_kms", Location: imported.ARN,
			Attributes: map[string]string{
				"Origin": "EXTERNAL", "KeySpec": "RSA_2048", "KeyUsage": "SIGN_VERIFY",
				"KeyManager": "CUSTOMER", "KeyState": "Enabled", "MultiRegion": "false",
			},
		},
	}}
	for _, tt := range tests {
		p, err := m.Provenance(ctx, tt.id)
		if err != nil {
			t.Fatalf("Provenance(%q): %v", tt.id, err)
		}
		if fmt.Sprint(*p) != fmt.Sprint(tt.want) {
			t.Errorf("Provenance(%q):\ngot  %+v\nwant %+v", tt.id, *p, tt.want)
		}
	}
	if _, err := m.Provenance(ctx, "missing"); !errors.Is(err, hsm.ErrNotFound) {
		t.Errorf("Provenance(missing): got %v, want an error wrapping hsm.ErrNotFound", err)
	}
}

func TestSweep(t *testing.T) {
	ctx := t.Context()
	s := newServer(t)
	c := config(s, "sweeper")
	m := newManager(t, c)
	for _, id := range []string{"x509-ca-A", "jwt-A"} {
		if _, err := m.GenerateKey(ctx, id, hsm.ECP256); err != nil {
			t.Fatalf("GenerateKey(%q): %v", id, err)
		}
	}
	add := func(tags map[string]string) kmstest.KeyInfo {
		t.Helper()
		k, err := s.AddKey("ECC_NIST_P256", "", tags)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	ours := map[string]string{awskms.TagServer: "sweeper", awskms.TagKeyID: "x509-ca-B"}
	orphan := add(ours)
	disabled := add(ours)
	s.SetKeyState(disabled.ID, kmstest.Disabled)
	pending := add(ours)
	s.SetKeyState(pending.ID, kmstest.PendingDeletion)
	aliasedElsewhere := add(ours)
	s.SetAlias("alias/operator/keep-me", aliasedElsewhere.ID)
	otherServer := add(map[string]string{awskms.TagServer: "another"})
	untagged := add(nil)

	// Within the grace period nothing is swept: a GenerateKey may be
	// setting the keys up.
	if n, err := m.Sweep(ctx); n != 0 || err != nil {
		t.Fatalf("Sweep within the grace period: got %d, %v; want 0, nil", n, err)
	}
	later := c
	later.Clock = func() time.Time { return time.Now().Add(time.Hour + time.Minute) }
	sweeper := newManager(t, later)
	if n, err := sweeper.Sweep(ctx); n != 2 || err != nil {
		t.Fatalf("Sweep: got %d, %v; want 2, nil", n, err)
	}
	want := map[string]string{
		orphan.ID: kmstest.PendingDeletion, disabled.ID: kmstest.PendingDeletion, pending.ID: kmstest.PendingDeletion,
		aliasedElsewhere.ID: kmstest.Enabled, otherServer.ID: kmstest.Enabled, untagged.ID: kmstest.Enabled,
	}
	for id, state := range want {
		if k, _ := s.Key(id); k.State != state {
			t.Errorf("key %s (tags %v, aliases %v) is %s after Sweep, want %s", id, k.Tags, k.Aliases, k.State, state)
		}
	}
	if keys, err := m.ListKeys(ctx); err != nil || len(keys) != 2 {
		t.Errorf("ListKeys after Sweep: got %d keys, %v; want 2", len(keys), err)
	}
	if n, err := sweeper.Sweep(ctx); n != 0 || err != nil {
		t.Fatalf("second Sweep: got %d, %v; want 0, nil", n, err)
	}

	// A key whose tags the server may not read is skipped; a failure to
	// delete is reported and the sweep goes on.
	add(ours)
	add(ours)
	// The unaliased keys in creation order: orphan, disabled, pending,
	// otherServer, untagged, and the two new ones.
	s.Inject(kmstest.Fault{Op: "ListResourceTags", Err: "AccessDeniedException", Skip: 5, Times: 1})
	s.Fail("ScheduleKeyDeletion", "AccessDeniedException", 1)
	n, err := sweeper.Sweep(ctx)
	const wantErr = `^awskms: could not sweep key (arn:\S+): kms:ScheduleKeyDeletion on [-0-9a-f]+ denied: .*$`
	if n != 0 || err == nil || !regexp.MustCompile(wantErr).MatchString(err.Error()) {
		t.Fatalf("Sweep: got %d, %v; want 0 and an error matching %s", n, err, wantErr)
	}
	if n, err := sweeper.Sweep(ctx); n != 2 || err != nil {
		t.Fatalf("Sweep: got %d, %v; want 2, nil", n, err)
	}

	s.Fail("ListKeys", "AccessDeniedException", 1)
	_, err = sweeper.Sweep(ctx)
	const wantListErr = `^awskms: could not sweep: kms:ListKeys denied: allow kms:ListKeys to this server's AWS identity, in its IAM policy and in the key policy: .*$`
	if err == nil || !regexp.MustCompile(wantListErr).MatchString(err.Error()) {
		t.Fatalf("Sweep: got error %v, want one matching %s", err, wantListErr)
	}
}

func TestThrottling(t *testing.T) {
	ctx := t.Context()
	s := newServer(t)
	m := newManager(t, config(s, "throttled"))
	k, err := m.GenerateKey(ctx, "x509-ca-A", hsm.ECP256)
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}

	s.Throttle("Sign", 4)
	before := s.Calls("Sign")
	if _, err := k.Sign(rand.Reader, digest("throttled"), crypto.SHA256); err != nil {
		t.Fatalf("Sign throttled 4 times: %v", err)
	}
	if got := s.Calls("Sign") - before; got != 5 {
		t.Errorf("Sign throttled 4 times made %d calls, want 5", got)
	}

	s.Throttle("Sign", -1)
	before = s.Calls("Sign")
	_, err = k.Sign(rand.Reader, digest("throttled"), crypto.SHA256)
	const want = `^awskms: could not sign with key "x509-ca-A": kms:Sign on arn:\S+ throttled by KMS on all 5 attempts: raise the account's KMS request quota, or make fewer calls: operation error KMS: Sign, exceeded maximum number of attempts, 5, https response error StatusCode: 400, RequestID: [-0-9a-f]+, api error ThrottlingException: Rate exceeded$`
	if err == nil || !regexp.MustCompile(want).MatchString(err.Error()) {
		t.Fatalf("Sign always throttled: got error %v, want one matching %s", err, want)
	}
	if got := s.Calls("Sign") - before; got != 5 {
		t.Errorf("Sign always throttled made %d calls, want 5", got)
	}
}

// TestLimitExceededNotRetried checks that a KMS quota on resources, which
// the SDK takes for throttling, is reported at once.
func TestLimitExceededNotRetried(t *testing.T) {
	s := newServer(t)
	m := newManager(t, config(s, "limit"))
	s.Fail("CreateKey", "LimitExceededException", -1)
	_, err := m.GenerateKey(t.Context(), "x509-ca-A", hsm.ECP256)
	const want = `^awskms: could not generate key "x509-ca-A": kms:CreateKey: a KMS quota on keys or aliases is reached in this account and region: look for leaked keys \(Sweep deletes Plinth's\) or raise the quota: operation error KMS: CreateKey, https response error StatusCode: 400, RequestID: [-0-9a-f]+, LimitExceededException: LimitExceededException injected by kmstest$`
	if err == nil || !regexp.MustCompile(want).MatchString(err.Error()) {
		t.Fatalf("GenerateKey: got error %v, want one matching %s", err, want)
	}
	if n := s.Calls("CreateKey"); n != 1 {
		t.Errorf("CreateKey was called %d times, want once", n)
	}
}

func TestAccessDenied(t *testing.T) {
	ctx := t.Context()
	s := newServer(t)
	m := newManager(t, config(s, "denied"))
	k, err := m.GenerateKey(ctx, "x509-ca-A", hsm.ECP256)
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	s.Fail("Sign", "AccessDeniedException", -1)
	_, err = k.Sign(rand.Reader, digest("denied"), crypto.SHA256)
	const want = `^awskms: could not sign with key "x509-ca-A": kms:Sign on (arn:\S+) denied: allow kms:Sign to this server's AWS identity, in its IAM policy and in the key policy: operation error KMS: Sign, https response error StatusCode: 400, RequestID: [-0-9a-f]+, api error AccessDeniedException: User: arn:aws:iam::111122223333:user/kmstest is not authorized to perform: kms:Sign on resource: (arn:\S+) because no identity-based policy allows the kms:Sign action$`
	if err == nil || !regexp.MustCompile(want).MatchString(err.Error()) {
		t.Fatalf("Sign: got error %v, want one matching %s", err, want)
	}
	if n := s.Calls("Sign"); n != 1 {
		t.Errorf("a denied Sign was tried %d times, want once", n)
	}

	s.Fail("DescribeKey", "AccessDeniedException", 1)
	_, err = m.GetKey(ctx, "x509-ca-A")
	const wantGet = `^awskms: key "x509-ca-A": kms:DescribeKey on alias/plinth/denied/x509-ca-A denied: allow kms:DescribeKey .*$`
	if err == nil || errors.Is(err, hsm.ErrNotFound) || !regexp.MustCompile(wantGet).MatchString(err.Error()) {
		t.Fatalf("GetKey: got error %v, want one matching %s and not wrapping hsm.ErrNotFound", err, wantGet)
	}
}

func TestBadCredentials(t *testing.T) {
	s := newServer(t)
	c := config(s, "credentials")
	c.Credentials = aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{AccessKeyID: kmstest.AccessKeyID, SecretAccessKey: "wrong"}, nil
	})
	_, err := newManager(t, c).GetKey(t.Context(), "x509-ca-A")
	const want = `^awskms: key "x509-ca-A": kms:DescribeKey on alias/plinth/credentials/x509-ca-A: AWS rejected the credentials: check those this server finds \(AWS_PROFILE, AWS_ACCESS_KEY_ID, its role\) and that they are for this region: operation error KMS: DescribeKey, https response error StatusCode: 400, RequestID: [-0-9a-f]+, api error InvalidSignatureException: The request signature we calculated does not match .*$`
	if err == nil || !regexp.MustCompile(want).MatchString(err.Error()) {
		t.Fatalf("GetKey: got error %v, want one matching %s", err, want)
	}
}

func TestDeletedBehindTheBack(t *testing.T) {
	arn := `arn:aws:kms:us-east-1:111122223333:key/[-0-9a-f]+`
	tests := []struct {
		name     string
		change   func(s *kmstest.Server, ref string) error
		notFound bool
		wantSign string // regexp
		wantGet  string // regexp
	}{{
		name:     "pending deletion",
		change:   func(s *kmstest.Server, ref string) error { return s.SetKeyState(ref, kmstest.PendingDeletion) },
		notFound: true,
		wantSign: `^awskms: could not sign with key "x509-ca-A": KMS key ` + arn + ` is pending deletion on \d{4}-\d\d-\d\d \(kms:CancelKeyDeletion and kms:EnableKey recover it\): hsm: key not found \(operation error KMS: Sign, .*KMSInvalidStateException: ` + arn + ` is pending deletion.\)$`,
		wantGet:  `^awskms: key "x509-ca-A": KMS key ` + arn + ` is pending deletion on \d{4}-\d\d-\d\d \(kms:CancelKeyDeletion and kms:EnableKey recover it\): hsm: key not found$`,
	}, {
		name:     "deleted",
		change:   func(s *kmstest.Server, ref string) error { return s.DeleteKey(ref) },
		notFound: true,
		wantSign: `^awskms: could not sign with key "x509-ca-A": kms:Sign on ` + arn + `: the KMS key is gone \(deleted outside this server\?\): hsm: key not found: operation error KMS: Sign, .*NotFoundException: Key '` + arn + `' does not exist$`,
		wantGet:  `^awskms: key "x509-ca-A": no alias alias/plinth/behind/x509-ca-A: hsm: key not found$`,
	}, {
		name:     "disabled",
		change:   func(s *kmstest.Server, ref string) error { return s.SetKeyState(ref, kmstest.Disabled) },
		wantSign: `^awskms: could not sign with key "x509-ca-A": kms:Sign on ` + arn + `: the KMS key is disabled: enable it with kms:EnableKey: operation error KMS: Sign, .*DisabledException: ` + arn + ` is disabled.$`,
		wantGet:  `^awskms: key "x509-ca-A": KMS key ` + arn + ` is disabled: enable it with kms:EnableKey$`,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			s := newServer(t)
			m := newManager(t, config(s, "behind"))
			k, err := m.GenerateKey(ctx, "x509-ca-A", hsm.ECP256)
			if err != nil {
				t.Fatalf("GenerateKey: %v", err)
			}
			if err := tt.change(s, "alias/plinth/behind/x509-ca-A"); err != nil {
				t.Fatal(err)
			}
			_, err = k.Sign(rand.Reader, digest(tt.name), crypto.SHA256)
			if err == nil || !regexp.MustCompile(tt.wantSign).MatchString(err.Error()) || errors.Is(err, hsm.ErrNotFound) != tt.notFound {
				t.Errorf("Sign: got error %v, want one matching %s (wrapping hsm.ErrNotFound: %t)", err, tt.wantSign, tt.notFound)
			}
			_, err = m.GetKey(ctx, "x509-ca-A")
			if err == nil || !regexp.MustCompile(tt.wantGet).MatchString(err.Error()) || errors.Is(err, hsm.ErrNotFound) != tt.notFound {
				t.Errorf("GetKey: got error %v, want one matching %s (wrapping hsm.ErrNotFound: %t)", err, tt.wantGet, tt.notFound)
			}
			keys, err := m.ListKeys(ctx)
			if tt.notFound && (err != nil || len(keys) != 0) {
				t.Errorf("ListKeys: got %d keys, %v; want none", len(keys), err)
			}
			if !tt.notFound && err == nil {
				t.Errorf("ListKeys: got %d keys, no error; want the error of GetKey", len(keys))
			}
			// The ID can be generated again.
			if _, err := m.GenerateKey(ctx, "x509-ca-A", hsm.ECP256); err != nil {
				t.Fatalf("GenerateKey again: %v", err)
			}
			if _, err := m.GetKey(ctx, "x509-ca-A"); err != nil {
				t.Fatalf("GetKey after GenerateKey again: %v", err)
			}
		})
	}
}

func digest(s string) []byte {
	d := sha256.Sum256([]byte(s))
	return d[:]
}

func TestSignOptions(t *testing.T) {
	ctx := t.Context()
	s := newServer(t)
	m := newManager(t, config(s, "sign"))
	ec256, err := m.GenerateKey(ctx, "ec256", hsm.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	ec384, err := m.GenerateKey(ctx, "ec384", hsm.ECP384)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := m.GenerateKey(ctx, "rsa", hsm.RSA2048)
	if err != nil {
		t.Fatal(err)
	}
	d384 := sha512.Sum384([]byte("sign"))
	d512 := sha512.Sum512([]byte("sign"))
	verifies := []struct {
		name   string
		k      hsm.Key
		digest []byte
		opts   crypto.SignerOpts
	}{
		{"P-256 SHA-384", ec256, d384[:], crypto.SHA384},
		{"P-256 SHA-512", ec256, d512[:], crypto.SHA512},
		{"P-384 SHA-256", ec384, digest("sign"), crypto.SHA256},
		{"P-384 SHA-512", ec384, d512[:], crypto.SHA512},
		{"RSA PKCS #1 v1.5 SHA-384", rsaKey, d384[:], crypto.SHA384},
		{"RSA PKCS #1 v1.5 SHA-512", rsaKey, d512[:], crypto.SHA512},
		{"RSA PSS SHA-384", rsaKey, d384[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA384}},
		{"RSA PSS SHA-256 auto salt", rsaKey, digest("sign"), &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto, Hash: crypto.SHA256}},
	}
	for _, tt := range verifies {
		sig, err := tt.k.Sign(rand.Reader, tt.digest, tt.opts)
		if err != nil {
			t.Errorf("%s: Sign: %v", tt.name, err)
			continue
		}
		var ok bool
		switch pub := tt.k.Public().(type) {
		case *ecdsa.PublicKey:
			ok = ecdsa.VerifyASN1(pub, tt.digest, sig)
		case *rsa.PublicKey:
			if pss, isPSS := tt.opts.(*rsa.PSSOptions); isPSS {
				ok = rsa.VerifyPSS(pub, pss.Hash, tt.digest, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto}) == nil
			} else {
				ok = rsa.VerifyPKCS1v15(pub, tt.opts.HashFunc(), tt.digest, sig) == nil
			}
		}
		if !ok {
			t.Errorf("%s: the signature does not verify", tt.name)
		}
	}

	before := s.Calls("Sign")
	fails := []struct {
		name   string
		k      hsm.Key
		digest []byte
		opts   crypto.SignerOpts
		want   string
	}{
		{"SHA-1", ec256, make([]byte, 20), crypto.SHA1, `awskms: could not sign with key "ec256": KMS signs SHA-256, SHA-384 or SHA-512 digests, not SHA-1`},
		{"no hash", ec256, digest("x"), crypto.Hash(0), `awskms: could not sign with key "ec256": KMS signs SHA-256, SHA-384 or SHA-512 digests, not unknown hash value 0`},
		{"short digest", rsaKey, digest("x")[:31], crypto.SHA256, `awskms: could not sign with key "rsa": the digest is 31 bytes long, a SHA-256 digest 32`},
		{"PSS on EC", ec256, digest("x"), &rsa.PSSOptions{Hash: crypto.SHA256}, `awskms: could not sign with key "ec256": PSS options for an EC key`},
		{"PSS salt", rsaKey, digest("x"), &rsa.PSSOptions{SaltLength: 20, Hash: crypto.SHA256}, `awskms: could not sign with key "rsa": KMS signs PSS with a salt as long as the hash (32 bytes), not 20`},
	}
	for _, tt := range fails {
		_, err := tt.k.Sign(rand.Reader, tt.digest, tt.opts)
		if err == nil || err.Error() != tt.want {
			t.Errorf("%s: Sign: got error %v, want %s", tt.name, err, tt.want)
		}
	}
	if n := s.Calls("Sign") - before; n != 0 {
		t.Errorf("signing with bad options called KMS %d times", n)
	}
}

func TestNew(t *testing.T) {
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_DEFAULT_REGION", "")
	t.Setenv("AWS_CONFIG_FILE", "/nonexistent")
	t.Setenv("AWS_PROFILE", "")
	ok := awskms.Config{Region: "eu-west-1", AliasPrefix: "alias/plinth/example-org/s1/", ServerID: "s1", Credentials: kmstest.Credentials()}
	tests := []struct {
		name   string
		change func(c *awskms.Config)
		want   string
	}{
		{"no prefix", func(c *awskms.Config) { c.AliasPrefix = "" }, "awskms: AliasPrefix is empty (want one such as alias/plinth/<trust domain>/<server id>/)"},
		{"not alias/", func(c *awskms.Config) { c.AliasPrefix = "plinth/" }, `awskms: AliasPrefix "plinth/" does not begin with alias/ and end with /`},
		{"no trailing /", func(c *awskms.Config) { c.AliasPrefix = "alias/plinth" }, `awskms: AliasPrefix "alias/plinth" does not begin with alias/ and end with /`},
		{"reserved", func(c *awskms.Config) { c.AliasPrefix = "alias/aws/plinth/" }, `awskms: AliasPrefix "alias/aws/plinth/" is under alias/aws/, which AWS reserves for its managed keys`},
		{"dots", func(c *awskms.Config) { c.AliasPrefix = "alias/plinth/example.org/" }, `awskms: AliasPrefix "alias/plinth/example.org/" has characters a KMS alias cannot hold (want letters, digits, '/', '_' and '-'; replace a trust domain's dots)`},
		{"no server ID", func(c *awskms.Config) { c.ServerID = "" }, "awskms: ServerID is empty: it tags every key the server creates, so that Sweep finds the orphaned ones"},
		{"negative", func(c *awskms.Config) { c.SweepGrace = -time.Hour }, "awskms: SweepGrace, MaxAttempts and MaxBackoff must not be negative"},
		{"no region", func(c *awskms.Config) { c.Region = "" }, "awskms: no AWS region: set Region, or AWS_REGION in the environment"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.change(&c)
			_, err := awskms.New(t.Context(), c)
			if err == nil || err.Error() != tt.want {
				t.Errorf("New: got error %v, want %s", err, tt.want)
			}
		})
	}
	if _, err := awskms.New(t.Context(), ok); err != nil {
		t.Errorf("New: %v", err)
	}
}

func TestKeyIDs(t *testing.T) {
	ctx := t.Context()
	s := newServer(t)
	c := config(s, "ids")
	m := newManager(t, c)
	for id, want := range map[string]string{
		"":                       "awskms: key id is empty",
		"x509/ca":                `awskms: key id "x509/ca" has characters a KMS alias cannot hold (want letters, digits, '_' and '-')`,
		"x509.ca":                `awskms: key id "x509.ca" has characters a KMS alias cannot hold (want letters, digits, '_' and '-')`,
		strings.Repeat("a", 250): `awskms: key id "` + strings.Repeat("a", 250) + `" makes an alias longer than KMS's 256 characters`,
	} {
		if _, err := m.GenerateKey(ctx, id, hsm.ECP256); err == nil || err.Error() != want {
			t.Errorf("GenerateKey(%q): got error %v, want %s", id, err, want)
		}
		if _, err := m.GetKey(ctx, id); !errors.Is(err, hsm.ErrNotFound) {
			t.Errorf("GetKey(%q): got %v, want an error wrapping hsm.ErrNotFound", id, err)
		}
	}
	if n := len(s.Keys()); n != 0 {
		t.Errorf("bad IDs created %d keys", n)
	}

	// Aliases of a nested prefix are not this manager's keys.
	other := c
	other.AliasPrefix = c.AliasPrefix + "nested/"
	if _, err := newManager(t, other).GenerateKey(ctx, "x509-ca-A", hsm.ECP256); err != nil {
		t.Fatal(err)
	}
	if keys, err := m.ListKeys(ctx); err != nil || len(keys) != 0 {
		t.Errorf("ListKeys: got %d keys, %v; want none", len(keys), err)
	}
}

// TestRetryConfigDecides checks that AWS_MAX_ATTEMPTS does not override
// Config.MaxAttempts.
func TestRetryConfigDecides(t *testing.T) {
	t.Setenv("AWS_MAX_ATTEMPTS", "1")
	s := newServer(t)
	c := config(s, "attempts")
	c.MaxAttempts = 3
	m := newManager(t, c)
	s.Throttle("CreateKey", 2)
	if _, err := m.GenerateKey(t.Context(), "x509-ca-A", hsm.ECP256); err != nil {
		t.Fatalf("GenerateKey throttled twice: %v", err)
	}
	s.Throttle("DescribeKey", 3)
	if _, err := m.GetKey(t.Context(), "x509-ca-A"); err == nil || !strings.Contains(err.Error(), "throttled by KMS on all 3 attempts") {
		t.Fatalf("GetKey throttled 3 times: got %v, want an error after 3 attempts", err)
	}
}

// cancelAfter cancels a context once a call to op has had its response.
type cancelAfter struct {
	op     string
	cancel context.CancelFunc
}

func (c cancelAfter) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	if r.Header.Get("X-Amz-Target") == "TrentService."+c.op {
		c.cancel()
	}
	return resp, err
}

// TestGenerateKeyCanceled checks that a GenerateKey whose context is
// canceled half-way still cleans up after itself.
func TestGenerateKeyCanceled(t *testing.T) {
	for _, op := range []string{"CreateKey", "GetPublicKey", "UpdateAlias"} {
		t.Run(op, func(t *testing.T) {
			s := newServer(t)
			c := config(s, "canceled")
			m := newManager(t, c)
			if _, err := m.GenerateKey(t.Context(), "x509-ca-A", hsm.ECP256); err != nil {
				t.Fatalf("GenerateKey: %v", err)
			}
			ctx, cancel := context.WithCancel(t.Context())
			c.HTTPClient = &http.Client{Transport: cancelAfter{op, cancel}}
			k, err := newManager(t, c).GenerateKey(ctx, "x509-ca-A", hsm.ECP256)
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Fatalf("GenerateKey: got error %v, want nil or one wrapping context.Canceled", err)
			}
			got, gerr := m.GetKey(t.Context(), "x509-ca-A")
			if gerr != nil {
				t.Fatalf("GetKey: %v", gerr)
			}
			if err == nil && !got.Public().(*ecdsa.PublicKey).Equal(k.Public()) {
				t.Error("GenerateKey succeeded but GetKey returns another key")
			}
			if leaked := orphans(s); len(leaked) > 0 {
				t.Fatalf("keys leaked: %v", leaked)
			}
			if n := len(s.Keys()); n != 2 {
				t.Fatalf("the fake holds %d keys, want 2", n)
			}
		})
	}
}
