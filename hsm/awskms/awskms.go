package awskms

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/plinth-id/plinth/hsm"
)

var (
	_ hsm.KeyManager = (*Manager)(nil)
	_ hsm.Deleter    = (*Manager)(nil)
	_ hsm.Attester   = (*Manager)(nil)
	_ hsm.Sweeper    = (*Manager)(nil)
)

// The tags the Manager sets on every key it creates.
const (
	// TagServer's value is Config.ServerID: Sweep finds the server's keys
	// by it, and an IAM policy can limit the server to them.
	TagServer = "plinth:server"
	// TagKeyID's value is the key ID the key was created for, for
	// operators.
	TagKeyID = "plinth:key-id"
)

const (
	backend            = "aws_kms"
	pendingWindowDays  = 7 // the shortest KMS allows
	defaultSweepGrace  = time.Hour
	defaultMaxAttempts = 5
	defaultMaxBackoff  = 2 * time.Second
	// callTimeout bounds the calls that have no context of their own: Sign
	// and the clean-up after a failed GenerateKey.
	callTimeout = 30 * time.Second
)

// Config configures a Manager.
type Config struct {
	// Region is the AWS region of the keys; empty takes it from the
	// environment (AWS_REGION, the shared config file).
	Region string
	// Endpoint overrides the KMS endpoint (the client's BaseEndpoint), such
	// as a VPC endpoint's URL or a fake's in tests.
	Endpoint string
	// AliasPrefix names the keys: the key of ID "x509-ca-A" is the one
	// alias AliasPrefix+"x509-ca-A" points to. It begins with "alias/", ends
	// with "/" and holds letters, digits, '/', '_' and '-' only (replace a
	// trust domain's dots), such as "alias/plinth/example-org/server-1/".
	AliasPrefix string
	// ServerID is set in tag TagServer on every key the Manager creates,
	// so that Sweep finds the keys that no alias points to any more.
	ServerID string
	// Credentials are the AWS credentials; nil takes them from the
	// standard chain (environment, shared files, web identity, ECS, EC2).
	Credentials aws.CredentialsProvider
	// HTTPClient, if not nil, makes the requests to KMS (not those of the
	// credential providers), with its own TLS configuration: AWS_CA_BUNDLE
	// does not apply to it.
	HTTPClient *http.Client
	// Clock tells the time for Sweep; nil is time.Now.
	Clock func() time.Time
	// SweepGrace is how old an orphaned key must be before Sweep deletes
	// it, so that a key a GenerateKey is still setting up is safe; 0 is
	// one hour.
	SweepGrace time.Duration
	// MaxAttempts is how often a call is tried when KMS throttles it or
	// fails transiently; 0 is 5. MaxBackoff caps the random wait between
	// attempts, which doubles from 200 ms; 0 is 2 s. These two decide, not
	// AWS_MAX_ATTEMPTS or AWS_RETRY_MODE.
	MaxAttempts int
	MaxBackoff  time.Duration
	// Log receives what the Manager does to keys beyond the call at hand:
	// retiring a replaced key, sweeping orphans. Nil discards.
	Log *slog.Logger
}

// Manager holds signing keys in AWS KMS, each behind an alias. It
// implements hsm.KeyManager, hsm.Deleter, hsm.Attester and hsm.Sweeper and
// is safe for concurrent use.
type Manager struct {
	client   *kms.Client
	prefix   string
	serverID string
	grace    time.Duration
	clock    func() time.Time
	log      *slog.Logger
	locks    idLocks

	mu   sync.Mutex
	pubs map[string]crypto.PublicKey // by key ARN; a KMS key's public half never changes
}

var (
	prefixChars = regexp.MustCompile(`^[a-zA-Z0-9/_-]+$`)
	idChars     = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)
)

// New returns a Manager for the keys behind c.AliasPrefix. It loads the AWS
// configuration but makes no call to KMS: wrong credentials or missing
// permissions show in the first call.
func New(ctx context.Context, c Config) (*Manager, error) {
	switch p := c.AliasPrefix; {
	case p == "":
		return nil, errors.New("awskms: AliasPrefix is empty (want one such as alias/plinth/<trust domain>/<server id>/)")
	case !strings.HasPrefix(p, "alias/") || !strings.HasSuffix(p, "/") || p == "alias/":
		return nil, fmt.Errorf("awskms: AliasPrefix %q does not begin with alias/ and end with /", p)
	case strings.HasPrefix(p, "alias/aws/"):
		return nil, fmt.Errorf("awskms: AliasPrefix %q is under alias/aws/, which AWS reserves for its managed keys", p)
	case !prefixChars.MatchString(p):
		return nil, fmt.Errorf("awskms: AliasPrefix %q has characters a KMS alias cannot hold (want letters, digits, '/', '_' and '-'; replace a trust domain's dots)", p)
	case len(p) > 200:
		return nil, fmt.Errorf("awskms: AliasPrefix %q is longer than 200 characters, leaving too little of KMS's 256 for key IDs", p)
	}
	switch {
	case c.ServerID == "":
		return nil, errors.New("awskms: ServerID is empty: it tags every key the server creates, so that Sweep finds the orphaned ones")
	case len(c.ServerID) > 256:
		return nil, errors.New("awskms: ServerID is longer than the 256 characters a KMS tag value holds")
	case c.SweepGrace < 0 || c.MaxAttempts < 0 || c.MaxBackoff < 0:
		return nil, errors.New("awskms: SweepGrace, MaxAttempts and MaxBackoff must not be negative")
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.SweepGrace == 0 {
		c.SweepGrace = defaultSweepGrace
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = defaultMaxAttempts
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = defaultMaxBackoff
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}

	var opts []func(*config.LoadOptions) error
	if c.Region != "" {
		opts = append(opts, config.WithRegion(c.Region))
	}
	if c.Credentials != nil {
		opts = append(opts, config.WithCredentialsProvider(c.Credentials))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("awskms: could not load the AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		return nil, errors.New("awskms: no AWS region: set Region, or AWS_REGION in the environment")
	}
	client := kms.NewFromConfig(cfg, func(o *kms.Options) {
		if c.Endpoint != "" {
			o.BaseEndpoint = aws.String(c.Endpoint)
		}
		if c.HTTPClient != nil {
			// Set here, not with config.WithHTTPClient, which fails when
			// AWS_CA_BUNDLE is set: the SDK cannot add the bundle to an
			// *http.Client.
			o.HTTPClient = c.HTTPClient
		}
		o.Retryer = newRetryer(c.MaxAttempts, c.MaxBackoff)
		o.RetryMaxAttempts = 0 // else AWS_MAX_ATTEMPTS would wrap the retryer
	})
	return &Manager{
		client:   client,
		prefix:   c.AliasPrefix,
		serverID: c.ServerID,
		grace:    c.SweepGrace,
		clock:    c.Clock,
		log:      c.Log,
		pubs:     make(map[string]crypto.PublicKey),
	}, nil
}

// checkID returns an error if no key can have the id.
func (m *Manager) checkID(id string) error {
	switch {
	case id == "":
		return errors.New("awskms: key id is empty")
	case !idChars.MatchString(id):
		return fmt.Errorf("awskms: key id %q has characters a KMS alias cannot hold (want letters, digits, '_' and '-')", id)
	case len(m.prefix)+len(id) > 256:
		return fmt.Errorf("awskms: key id %q makes an alias longer than KMS's 256 characters", id)
	}
	return nil
}

func (m *Manager) alias(id string) string { return m.prefix + id }

// keySpecs maps each key type to its KMS key spec.
var keySpecs = map[hsm.KeyType]types.KeySpec{
	hsm.ECP256:  types.KeySpecEccNistP256,
	hsm.ECP384:  types.KeySpecEccNistP384,
	hsm.RSA2048: types.KeySpecRsa2048,
	hsm.RSA4096: types.KeySpecRsa4096,
}

func keyType(spec types.KeySpec) (hsm.KeyType, bool) {
	for t, s := range keySpecs {
		if s == spec {
			return t, true
		}
	}
	return "", false
}

// GenerateKey creates a KMS key of type t, tagged with TagServer and
// TagKeyID, points the id's alias at it and schedules the deletion of the
// key the alias pointed to before, if this server created it.
//
// A GenerateKey that fails leaves the alias as it was and schedules the
// deletion of the key it created, even if ctx is done. When that fails too,
// or when KMS cannot say whether the alias moved, the error says so and
// Sweep deletes the key later. A key created by a CreateKey whose response
// was lost is tagged as well, and Sweep deletes it.
func (m *Manager) GenerateKey(ctx context.Context, id string, t hsm.KeyType) (hsm.Key, error) {
	if err := m.checkID(id); err != nil {
		return nil, err
	}
	spec, ok := keySpecs[t]
	if !ok {
		_, err := hsm.ParseKeyType(string(t))
		return nil, fmt.Errorf("awskms: could not generate key %q: %w", id, err)
	}
	defer m.locks.lock(id)()

	k, err := m.generate(ctx, id, t, spec)
	if err != nil {
		return nil, fmt.Errorf("awskms: could not generate key %q: %w", id, err)
	}
	return k, nil
}

func (m *Manager) generate(ctx context.Context, id string, t hsm.KeyType, spec types.KeySpec) (*Key, error) {
	out, err := m.client.CreateKey(ctx, &kms.CreateKeyInput{
		KeySpec:     spec,
		KeyUsage:    types.KeyUsageTypeSignVerify,
		Description: aws.String(fmt.Sprintf("Plinth key %s of server %s", id, m.serverID)),
		Tags: []types.Tag{
			{TagKey: aws.String(TagServer), TagValue: aws.String(m.serverID)},
			{TagKey: aws.String(TagKeyID), TagValue: aws.String(id)},
		},
	})
	if err != nil {
		return nil, opError("CreateKey", "", err)
	}
	if out.KeyMetadata == nil {
		return nil, errors.New("kms:CreateKey returned no key metadata")
	}
	created, arn := aws.ToString(out.KeyMetadata.KeyId), aws.ToString(out.KeyMetadata.Arn)

	pub, err := m.publicKey(ctx, arn, t)
	if err != nil {
		return nil, m.discard(ctx, arn, err)
	}
	old, err := m.aliasTarget(ctx, id)
	if err != nil && !errors.Is(err, hsm.ErrNotFound) {
		return nil, m.discard(ctx, arn, err)
	}
	if err := m.pointAlias(ctx, id, created, old != nil); err != nil {
		// KMS may have moved the alias and lost the response: look before
		// deleting a key the alias might point to.
		cctx, cancel := cleanupContext(ctx)
		now, lerr := m.aliasTarget(cctx, id)
		cancel()
		switch {
		case lerr != nil && !errors.Is(lerr, hsm.ErrNotFound):
			return nil, fmt.Errorf("%w; the new key %s is left for Sweep, as KMS cannot say whether the alias points to it: %v", err, arn, lerr)
		case now == nil || aws.ToString(now.KeyId) != created:
			return nil, m.discard(ctx, arn, err)
		}
		m.log.Warn("awskms: KMS moved the alias although it reported an error", "id", id, "key", arn, "error", err)
	}
	if old != nil && aws.ToString(old.KeyId) != created {
		m.retire(ctx, id, old)
	}
	m.log.Info("awskms: generated key", "id", id, "key", arn, "type", t)
	return &Key{m: m, id: id, typ: t, arn: arn, pub: pub}, nil
}

// cleanupContext returns a context for finishing what a call started, that
// ctx being done does not cancel.
func cleanupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), callTimeout)
}

// discard schedules the deletion of the key a failed GenerateKey created and
// returns cause with what happened to the key.
func (m *Manager) discard(ctx context.Context, arn string, cause error) error {
	ctx, cancel := cleanupContext(ctx)
	defer cancel()
	if err := m.scheduleDeletion(ctx, arn); err != nil {
		return fmt.Errorf("%w; the new key %s is left for Sweep, as %v", cause, arn, opError("ScheduleKeyDeletion", arn, err))
	}
	return fmt.Errorf("%w; the new key %s is scheduled for deletion", cause, arn)
}

// retire schedules the deletion of the key the id's alias pointed to before
// GenerateKey, if this server created it. A failure is logged: the new key
// is in place, and Sweep deletes the old one later.
func (m *Manager) retire(ctx context.Context, id string, old *types.KeyMetadata) {
	if old.KeyState == types.KeyStatePendingDeletion {
		return
	}
	ctx, cancel := cleanupContext(ctx)
	defer cancel()
	arn := aws.ToString(old.Arn)
	ours, err := m.created(ctx, arn)
	if err == nil && !ours {
		m.log.Warn("awskms: the replaced key was not created by this server and is left alone", "id", id, "key", arn)
		return
	}
	if err == nil {
		err = m.scheduleDeletion(ctx, arn)
	}
	if err != nil {
		m.log.Warn("awskms: could not retire the replaced key; Sweep will", "id", id, "key", arn, "error", err)
		return
	}
	m.log.Info("awskms: scheduled the deletion of the replaced key", "id", id, "key", arn, "days", pendingWindowDays)
}

// scheduleDeletion schedules the deletion of the key, with the shortest
// waiting period KMS allows. A key already pending deletion is no error.
func (m *Manager) scheduleDeletion(ctx context.Context, keyID string) error {
	_, err := m.client.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{
		KeyId:               aws.String(keyID),
		PendingWindowInDays: aws.Int32(pendingWindowDays),
	})
	if errorCode(err) == "KMSInvalidStateException" {
		if md, derr := m.describe(ctx, keyID); derr == nil && md.KeyState == types.KeyStatePendingDeletion {
			return nil
		}
	}
	return err
}

// created reports whether the key carries this server's TagServer.
func (m *Manager) created(ctx context.Context, keyID string) (bool, error) {
	p := kms.NewListResourceTagsPaginator(m.client, &kms.ListResourceTagsInput{KeyId: aws.String(keyID)})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			return false, opError("ListResourceTags", keyID, err)
		}
		for _, t := range out.Tags {
			if aws.ToString(t.TagKey) == TagServer {
				return aws.ToString(t.TagValue) == m.serverID, nil
			}
		}
	}
	return false, nil
}

// pointAlias points the id's alias at the key: it updates the alias if
// exists says there is one and creates it if not, and the other way round
// if KMS disagrees.
func (m *Manager) pointAlias(ctx context.Context, id, keyID string, exists bool) error {
	name := m.alias(id)
	for range 2 {
		var err error
		op := "UpdateAlias"
		if exists {
			_, err = m.client.UpdateAlias(ctx, &kms.UpdateAliasInput{AliasName: &name, TargetKeyId: &keyID})
		} else {
			op = "CreateAlias"
			_, err = m.client.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: &name, TargetKeyId: &keyID})
		}
		switch code := errorCode(err); {
		case err == nil:
			return nil
		case exists && code == "NotFoundException", !exists && code == "AlreadyExistsException":
			exists = !exists // changed by another server meanwhile
		default:
			return opError(op, name, err)
		}
	}
	return fmt.Errorf("could not point alias %s at the new key: another server keeps creating and deleting it", name)
}

// aliasTarget describes the key the id's alias points to, or returns an
// error wrapping hsm.ErrNotFound if there is no alias.
func (m *Manager) aliasTarget(ctx context.Context, id string) (*types.KeyMetadata, error) {
	md, err := m.describe(ctx, m.alias(id))
	switch {
	case errorCode(err) == "NotFoundException":
		return nil, fmt.Errorf("no alias %s: %w", m.alias(id), hsm.ErrNotFound)
	case err != nil:
		return nil, opError("DescribeKey", m.alias(id), err)
	}
	return md, nil
}

// describe returns the metadata of the key ref (an ARN or alias) names, or
// the SDK's error.
func (m *Manager) describe(ctx context.Context, ref string) (*types.KeyMetadata, error) {
	out, err := m.client.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(ref)})
	if err != nil {
		return nil, err
	}
	if out.KeyMetadata == nil {
		return nil, fmt.Errorf("kms:DescribeKey on %s returned no key metadata", ref)
	}
	return out.KeyMetadata, nil
}

// GetKey returns the key the id's alias points to, or an error wrapping
// hsm.ErrNotFound if there is no alias or its KMS key is pending deletion or
// deleted. A disabled KMS key is an error that does not wrap
// hsm.ErrNotFound: the key is there, and an operator can enable it.
func (m *Manager) GetKey(ctx context.Context, id string) (hsm.Key, error) {
	if m.checkID(id) != nil {
		return nil, fmt.Errorf("awskms: key %q: %w", id, hsm.ErrNotFound)
	}
	k, err := m.getKey(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("awskms: key %q: %w", id, err)
	}
	return k, nil
}

func (m *Manager) getKey(ctx context.Context, id string) (*Key, error) {
	md, err := m.aliasTarget(ctx, id)
	if err != nil {
		return nil, err
	}
	k, err := m.keyFor(ctx, id, md)
	if errors.Is(err, hsm.ErrNotFound) {
		// A GenerateKey elsewhere may have moved the alias and retired the
		// key meanwhile: look at the alias once more.
		again, aerr := m.aliasTarget(ctx, id)
		if aerr != nil {
			return nil, aerr
		}
		if aws.ToString(again.KeyId) != aws.ToString(md.KeyId) {
			return m.keyFor(ctx, id, again)
		}
	}
	return k, err
}

// keyFor returns the Key of the id, whose alias points to the KMS key md
// describes.
func (m *Manager) keyFor(ctx context.Context, id string, md *types.KeyMetadata) (*Key, error) {
	if err := stateError(md); err != nil {
		return nil, err
	}
	arn := aws.ToString(md.Arn)
	t, ok := keyType(md.KeySpec)
	if !ok || md.KeyUsage != types.KeyUsageTypeSignVerify {
		return nil, fmt.Errorf("KMS key %s has key spec %s and usage %s; Plinth signs with ECC_NIST_P256, ECC_NIST_P384, RSA_2048 or RSA_4096 keys for SIGN_VERIFY", arn, md.KeySpec, md.KeyUsage)
	}
	pub, err := m.publicKey(ctx, arn, t)
	if err != nil {
		return nil, err
	}
	return &Key{m: m, id: id, typ: t, arn: arn, pub: pub}, nil
}

// stateError returns an error if the KMS key md describes cannot sign in
// its state, wrapping hsm.ErrNotFound if it is pending deletion.
func stateError(md *types.KeyMetadata) error {
	arn := aws.ToString(md.Arn)
	switch md.KeyState {
	case types.KeyStateEnabled:
		return nil
	case types.KeyStatePendingDeletion:
		when := ""
		if md.DeletionDate != nil {
			when = " on " + md.DeletionDate.UTC().Format(time.DateOnly)
		}
		return fmt.Errorf("KMS key %s is pending deletion%s (kms:CancelKeyDeletion and kms:EnableKey recover it): %w", arn, when, hsm.ErrNotFound)
	case types.KeyStateDisabled:
		return fmt.Errorf("KMS key %s is disabled: enable it with kms:EnableKey", arn)
	}
	return fmt.Errorf("KMS key %s is in state %s and cannot sign", arn, md.KeyState)
}

// publicKey returns the public half of the KMS key, which must be of type t,
// from the cache or from KMS.
func (m *Manager) publicKey(ctx context.Context, arn string, t hsm.KeyType) (crypto.PublicKey, error) {
	m.mu.Lock()
	pub, ok := m.pubs[arn]
	m.mu.Unlock()
	if ok {
		return pub, nil
	}
	out, err := m.client.GetPublicKey(ctx, &kms.GetPublicKeyInput{KeyId: aws.String(arn)})
	if err != nil {
		return nil, opError("GetPublicKey", arn, err)
	}
	pub, err = x509.ParsePKIXPublicKey(out.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("kms:GetPublicKey on %s returned a public key that does not parse: %w", arn, err)
	}
	if got := describePublic(pub); got != string(t) {
		return nil, fmt.Errorf("kms:GetPublicKey on %s returned a %s public key for a %s key", arn, got, t)
	}
	m.mu.Lock()
	m.pubs[arn] = pub
	m.mu.Unlock()
	return pub, nil
}

// ListKeys returns the keys behind the aliases under AliasPrefix, sorted by
// ID. An alias whose KMS key is gone (pending deletion or deleted) is left
// out, as GetKey reports it not found; any other key GetKey could not
// return (a disabled one, say) makes ListKeys fail.
func (m *Manager) ListKeys(ctx context.Context) ([]hsm.Key, error) {
	ids, err := m.aliasIDs(ctx)
	if err != nil {
		return nil, fmt.Errorf("awskms: could not list keys: %w", err)
	}
	keys := make([]hsm.Key, 0, len(ids))
	for _, id := range ids {
		k, err := m.getKey(ctx, id)
		switch {
		case errors.Is(err, hsm.ErrNotFound):
			continue
		case err != nil:
			return nil, fmt.Errorf("awskms: could not list keys: key %q: %w", id, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// aliasIDs returns the sorted IDs of the aliases under AliasPrefix.
func (m *Manager) aliasIDs(ctx context.Context) ([]string, error) {
	var ids []string
	p := kms.NewListAliasesPaginator(m.client, &kms.ListAliasesInput{Limit: aws.Int32(100)})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			return nil, opError("ListAliases", "", err)
		}
		for _, a := range out.Aliases {
			id, ok := strings.CutPrefix(aws.ToString(a.AliasName), m.prefix)
			// An ID with a '/' belongs to another prefix, nested in this one.
			if ok && a.TargetKeyId != nil && m.checkID(id) == nil {
				ids = append(ids, id)
			}
		}
	}
	slices.Sort(ids)
	return ids, nil
}

// DeleteKey schedules the deletion of the KMS key the id's alias points to
// (if this server created it and it is not pending deletion already), then
// deletes the alias. It returns an error wrapping hsm.ErrNotFound if there is
// no alias. Keys returned earlier under the id fail to sign from then on.
func (m *Manager) DeleteKey(ctx context.Context, id string) error {
	if m.checkID(id) != nil {
		return fmt.Errorf("awskms: key %q: %w", id, hsm.ErrNotFound)
	}
	defer m.locks.lock(id)()
	if err := m.delete(ctx, id); err != nil {
		return fmt.Errorf("awskms: could not delete key %q: %w", id, err)
	}
	return nil
}

func (m *Manager) delete(ctx context.Context, id string) error {
	md, err := m.aliasTarget(ctx, id)
	if err != nil {
		return err
	}
	arn := aws.ToString(md.Arn)
	if md.KeyState != types.KeyStatePendingDeletion {
		ours, err := m.created(ctx, arn)
		switch {
		case err != nil:
			return err
		case !ours:
			m.log.Warn("awskms: the deleted key's KMS key was not created by this server and is left alone", "id", id, "key", arn)
		default:
			if err := m.scheduleDeletion(ctx, arn); err != nil {
				return opError("ScheduleKeyDeletion", arn, err)
			}
		}
	}
	name := m.alias(id)
	if _, err := m.client.DeleteAlias(ctx, &kms.DeleteAliasInput{AliasName: &name}); err != nil && errorCode(err) != "NotFoundException" {
		return fmt.Errorf("%w (its KMS key %s is pending deletion)", opError("DeleteAlias", name, err), arn)
	}
	m.log.Info("awskms: deleted key", "id", id, "key", arn, "days", pendingWindowDays)
	return nil
}

// Provenance returns KMS's evidence for the key the id's alias points to:
// its ARN, origin and key spec. A key of origin AWS_KMS was generated in
// KMS's HSMs, and KMS has no operation that exports the private half of an
// asymmetric key. An imported key (origin EXTERNAL) claims neither, as
// copies of it may exist outside.
//
// Caveat: the evidence is what KMS answers over an authenticated TLS
// connection, not a signed attestation that a third party could check.
func (m *Manager) Provenance(ctx context.Context, id string) (*hsm.Provenance, error) {
	if m.checkID(id) != nil {
		return nil, fmt.Errorf("awskms: key %q: %w", id, hsm.ErrNotFound)
	}
	md, err := m.aliasTarget(ctx, id)
	if err == nil && md.KeyState == types.KeyStatePendingDeletion {
		err = stateError(md)
	}
	if err != nil {
		return nil, fmt.Errorf("awskms: key %q: %w", id, err)
	}
	inside := md.Origin == types.OriginTypeAwsKms
	_, asymmetric := keyType(md.KeySpec)
	return &hsm.Provenance{
		Backend:         backend,
		Location:        aws.ToString(md.Arn),
		GeneratedInside: inside,
		NonExtractable:  inside && asymmetric,
		Attributes: map[string]string{
			"Origin":      string(md.Origin),
			"KeySpec":     string(md.KeySpec),
			"KeyUsage":    string(md.KeyUsage),
			"KeyManager":  string(md.KeyManager),
			"KeyState":    string(md.KeyState),
			"MultiRegion": strconv.FormatBool(aws.ToBool(md.MultiRegion)),
		},
	}, nil
}

// Sweep schedules the deletion of the KMS keys tagged with this server's
// TagServer that no alias points to (this Manager's or any other) and that
// are older than SweepGrace, and returns how many. Such keys are left by a
// crash or a lost response in the middle of GenerateKey, or by a failed
// clean-up.
//
// Sweep reads the tags of every key without an alias in the account and
// region, one ListResourceTags call each, and skips the keys whose tags it
// may not read. It goes on past a key it cannot delete and returns the
// errors with the count of the keys it did delete.
func (m *Manager) Sweep(ctx context.Context) (int, error) {
	aliased := make(map[string]bool)
	ap := kms.NewListAliasesPaginator(m.client, &kms.ListAliasesInput{Limit: aws.Int32(100)})
	for ap.HasMorePages() {
		out, err := ap.NextPage(ctx)
		if err != nil {
			return 0, fmt.Errorf("awskms: could not sweep: %w", opError("ListAliases", "", err))
		}
		for _, a := range out.Aliases {
			if a.TargetKeyId != nil {
				aliased[*a.TargetKeyId] = true
			}
		}
	}

	var (
		n    int
		errs []error
	)
	kp := kms.NewListKeysPaginator(m.client, &kms.ListKeysInput{Limit: aws.Int32(1000)})
	for kp.HasMorePages() {
		out, err := kp.NextPage(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("awskms: could not sweep: %w", opError("ListKeys", "", err)))
			break
		}
		for _, k := range out.Keys {
			keyID := aws.ToString(k.KeyId)
			if aliased[keyID] {
				continue
			}
			swept, err := m.sweepKey(ctx, keyID)
			if err != nil {
				errs = append(errs, fmt.Errorf("awskms: could not sweep key %s: %w", aws.ToString(k.KeyArn), err))
			}
			if swept {
				n++
			}
		}
	}
	return n, errors.Join(errs...)
}

// sweepKey schedules the deletion of the KMS key if it is an orphan of this
// server's, and reports whether it did.
func (m *Manager) sweepKey(ctx context.Context, keyID string) (bool, error) {
	ours, err := m.created(ctx, keyID)
	switch code := errorCode(err); {
	case code == "AccessDeniedException" || code == "NotFoundException":
		return false, nil // not ours to read, or deleted meanwhile
	case err != nil || !ours:
		return false, err
	}
	md, err := m.describe(ctx, keyID)
	if err != nil {
		return false, opError("DescribeKey", keyID, err)
	}
	if md.KeyManager != types.KeyManagerTypeCustomer ||
		(md.KeyState != types.KeyStateEnabled && md.KeyState != types.KeyStateDisabled) ||
		md.CreationDate == nil || m.clock().Sub(*md.CreationDate) < m.grace {
		return false, nil
	}
	// A last look, in case an alias was pointed at the key since the list.
	out, err := m.client.ListAliases(ctx, &kms.ListAliasesInput{KeyId: aws.String(keyID)})
	if err != nil {
		return false, opError("ListAliases", keyID, err)
	}
	if len(out.Aliases) > 0 {
		return false, nil
	}
	if err := m.scheduleDeletion(ctx, keyID); err != nil {
		return false, opError("ScheduleKeyDeletion", keyID, err)
	}
	m.log.Info("awskms: scheduled the deletion of an orphaned key", "key", aws.ToString(md.Arn),
		"created", md.CreationDate.UTC(), "description", aws.ToString(md.Description), "days", pendingWindowDays)
	return true, nil
}

// idLocks serializes GenerateKey and DeleteKey per key ID.
type idLocks struct {
	mu sync.Mutex
	m  map[string]*idLock
}

type idLock struct {
	sync.Mutex
	users int
}

// lock locks the id and returns the function that unlocks it.
func (l *idLocks) lock(id string) func() {
	l.mu.Lock()
	if l.m == nil {
		l.m = make(map[string]*idLock)
	}
	il, ok := l.m[id]
	if !ok {
		il = new(idLock)
		l.m[id] = il
	}
	il.users++
	l.mu.Unlock()
	il.Lock()
	return func() {
		il.Unlock()
		l.mu.Lock()
		if il.users--; il.users == 0 {
			delete(l.m, id)
		}
		l.mu.Unlock()
	}
}
