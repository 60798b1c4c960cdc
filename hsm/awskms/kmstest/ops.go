package kmstest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// epoch is a time on the wire: seconds since 1970, as a JSON number.
type epoch time.Time

func (t epoch) MarshalJSON() ([]byte, error) {
	return strconv.AppendFloat(nil, float64(time.Time(t).UnixMilli())/1e3, 'f', 3, 64), nil
}

func timePtr(t time.Time) *epoch {
	if t.IsZero() {
		return nil
	}
	e := epoch(t)
	return &e
}

type keyMetadata struct {
	AWSAccountId          string
	KeyId                 string
	Arn                   string
	CreationDate          *epoch `json:",omitempty"`
	DeletionDate          *epoch `json:",omitempty"`
	Description           string
	Enabled               bool
	KeyUsage              string
	KeyState              string
	Origin                string
	KeyManager            string
	CustomerMasterKeySpec string
	KeySpec               string
	SigningAlgorithms     []string
	MultiRegion           bool
}

func metadata(k *key) *keyMetadata {
	return &keyMetadata{
		AWSAccountId:          AccountID,
		KeyId:                 k.id,
		Arn:                   k.arn,
		CreationDate:          timePtr(k.created),
		DeletionDate:          timePtr(k.deletion),
		Description:           k.description,
		Enabled:               k.state == Enabled,
		KeyUsage:              k.usage,
		KeyState:              k.state,
		Origin:                k.origin,
		KeyManager:            "CUSTOMER",
		CustomerMasterKeySpec: k.spec,
		KeySpec:               k.spec,
		SigningAlgorithms:     signingAlgorithms(k.spec),
	}
}

// specs are the key specs the fake implements, with the signing algorithms
// KMS offers for each.
var specs = map[string][]string{
	"ECC_NIST_P256": {"ECDSA_SHA_256"},
	"ECC_NIST_P384": {"ECDSA_SHA_384"},
	"ECC_NIST_P521": {"ECDSA_SHA_512"},
	"RSA_2048":      rsaAlgorithms,
	"RSA_3072":      rsaAlgorithms,
	"RSA_4096":      rsaAlgorithms,
}

var rsaAlgorithms = []string{
	"RSASSA_PSS_SHA_256", "RSASSA_PSS_SHA_384", "RSASSA_PSS_SHA_512",
	"RSASSA_PKCS1_V1_5_SHA_256", "RSASSA_PKCS1_V1_5_SHA_384", "RSASSA_PKCS1_V1_5_SHA_512",
}

func signingAlgorithms(spec string) []string { return specs[spec] }

func decode(body []byte, v any) *apiError {
	if err := json.Unmarshal(body, v); err != nil {
		return kmsErr("SerializationException", "could not parse the request: %v", err)
	}
	return nil
}

func (s *Server) keyARN(id string) string {
	return "arn:aws:kms:" + Region + ":" + AccountID + ":key/" + id
}

func (s *Server) aliasARN(name string) string {
	return "arn:aws:kms:" + Region + ":" + AccountID + ":" + name
}

// resolve finds the key ref (key ID, key ARN, alias name or alias ARN)
// names. s.mu is held.
func (s *Server) resolve(ref string) (*key, *apiError) {
	if ref == "" {
		return nil, kmsErr("ValidationException", "1 validation error detected: Value null at 'keyId' failed to satisfy constraint: Member must not be null")
	}
	name, isAlias := strings.CutPrefix(ref, "arn:aws:kms:"+Region+":"+AccountID+":")
	if !isAlias {
		name = ref
	}
	if strings.HasPrefix(name, "alias/") {
		a, ok := s.aliases[name]
		if !ok {
			return nil, kmsErr("NotFoundException", "Alias %s is not found.", s.aliasARN(name))
		}
		name = a.target
	}
	id := strings.TrimPrefix(name, "key/")
	k, ok := s.keys[id]
	if !ok {
		return nil, kmsErr("NotFoundException", "Key '%s' does not exist", s.keyARN(id))
	}
	return k, nil
}

// resolveKey is resolve for operations that take a key ID or key ARN only.
func (s *Server) resolveKey(ref string) (*key, *apiError) {
	if strings.Contains(ref, "alias/") {
		return nil, kmsErr("NotFoundException", "Invalid keyId %s", ref)
	}
	return s.resolve(ref)
}

// usable returns the error KMS gives for a cryptographic operation on k in
// its state, or nil.
func usable(k *key) *apiError {
	switch k.state {
	case Enabled:
		return nil
	case Disabled:
		return kmsErr("DisabledException", "%s is disabled.", k.arn)
	case PendingDeletion:
		return kmsErr("KMSInvalidStateException", "%s is pending deletion.", k.arn)
	}
	return kmsErr("KMSInvalidStateException", "%s is %s.", k.arn, k.state)
}

var tagKeyChars = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$`)

func (s *Server) opCreateKey(body []byte) (any, *apiError) {
	var req struct {
		KeySpec, CustomerMasterKeySpec, KeyUsage, Origin, Description string
		MultiRegion                                                   bool
		CustomKeyStoreId                                              string
		Tags                                                          []tag
	}
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	spec := req.KeySpec
	if spec == "" {
		spec = req.CustomerMasterKeySpec
	}
	if spec == "" {
		spec = "SYMMETRIC_DEFAULT"
	}
	if req.Origin == "" {
		req.Origin = "AWS_KMS"
	}
	switch {
	case req.MultiRegion || req.CustomKeyStoreId != "" || req.Origin != "AWS_KMS":
		return nil, kmsErr("UnsupportedOperationException", "kmstest implements single-Region keys of origin AWS_KMS only")
	case len(req.Description) > 8192:
		return nil, kmsErr("ValidationException", "1 validation error detected: Value at 'description' failed to satisfy constraint: Member must have length less than or equal to 8192")
	}
	seen := make(map[string]bool)
	for _, t := range req.Tags {
		switch {
		case t.TagKey == "" || len(t.TagKey) > 128 || len(t.TagValue) > 256 || !tagKeyChars.MatchString(t.TagKey):
			return nil, kmsErr("TagException", "Tag %q=%q is invalid", t.TagKey, t.TagValue)
		case strings.HasPrefix(strings.ToLower(t.TagKey), "aws:"):
			return nil, kmsErr("TagException", "Tags beginning with aws: are reserved")
		case seen[t.TagKey]:
			return nil, kmsErr("TagException", "Duplicate tag keys")
		}
		seen[t.TagKey] = true
	}
	k, e := s.createKey(spec, req.KeyUsage, req.Origin, req.Description, req.Tags)
	if e != nil {
		return nil, e
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return map[string]any{"KeyMetadata": metadata(k)}, nil
}

// createKey generates a key and adds it to s. It takes s.mu itself, and
// not while it generates.
func (s *Server) createKey(spec, usage, origin, description string, tags []tag) (*key, *apiError) {
	if _, ok := specs[spec]; !ok {
		return nil, kmsErr("UnsupportedOperationException", "kmstest does not implement key spec %s", spec)
	}
	switch usage {
	case "":
		return nil, kmsErr("ValidationException", "You must specify a KeyUsage value for an asymmetric KMS key.")
	case "SIGN_VERIFY":
	default:
		return nil, kmsErr("UnsupportedOperationException", "kmstest implements key usage SIGN_VERIFY only, not %s", usage)
	}
	var (
		signer crypto.Signer
		err    error
	)
	switch spec {
	case "ECC_NIST_P256":
		signer, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ECC_NIST_P384":
		signer, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "ECC_NIST_P521":
		signer, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	default:
		bits, _ := strconv.Atoi(strings.TrimPrefix(spec, "RSA_"))
		signer, err = rsa.GenerateKey(rand.Reader, bits)
	}
	if err != nil {
		return nil, kmsErr("KMSInternalException", "could not generate the key: %v", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(signer.Public())
	if err != nil {
		return nil, kmsErr("KMSInternalException", "could not encode the public key: %v", err)
	}
	id := uuid.NewString()
	k := &key{
		id: id, arn: s.keyARN(id), spec: spec, usage: usage, origin: origin,
		description: description, state: Enabled, created: time.Now(),
		tags: slices.Clone(tags), signer: signer, pub: pub,
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys[id] = k
	s.order = append(s.order, k)
	return k, nil
}

func (s *Server) opDescribeKey(body []byte) (any, *apiError) {
	var req struct{ KeyId string }
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k, e := s.resolve(req.KeyId)
	if e != nil {
		return nil, e
	}
	return map[string]any{"KeyMetadata": metadata(k)}, nil
}

func (s *Server) opGetPublicKey(body []byte) (any, *apiError) {
	var req struct{ KeyId string }
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k, e := s.resolve(req.KeyId)
	if e != nil {
		return nil, e
	}
	if e := usable(k); e != nil {
		return nil, e
	}
	return map[string]any{
		"KeyId":                 k.arn,
		"PublicKey":             k.pub, // []byte: base64, as KMS sends blobs
		"CustomerMasterKeySpec": k.spec,
		"KeySpec":               k.spec,
		"KeyUsage":              k.usage,
		"SigningAlgorithms":     signingAlgorithms(k.spec),
	}, nil
}

// hashes are the hash functions of the signing algorithms.
var hashes = map[string]crypto.Hash{"SHA_256": crypto.SHA256, "SHA_384": crypto.SHA384, "SHA_512": crypto.SHA512}

func (s *Server) opSign(body []byte) (any, *apiError) {
	var req struct {
		KeyId, SigningAlgorithm, MessageType string
		Message                              []byte
		DryRun                               bool
	}
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	s.mu.Lock()
	k, e := s.resolve(req.KeyId)
	if e == nil {
		e = usable(k)
	}
	s.mu.Unlock()
	if e != nil {
		return nil, e
	}
	alg := req.SigningAlgorithm
	switch {
	case alg == "":
		return nil, kmsErr("ValidationException", "1 validation error detected: Value null at 'signingAlgorithm' failed to satisfy constraint: Member must not be null")
	case !slices.Contains(signingAlgorithms(k.spec), alg):
		return nil, kmsErr("InvalidKeyUsageException", "Algorithm %s is incompatible with key spec %s.", alg, k.spec)
	case len(req.Message) == 0 || len(req.Message) > 4096:
		return nil, kmsErr("ValidationException", "1 validation error detected: Value at 'message' failed to satisfy constraint: Member must have length between 1 and 4096")
	}
	h := hashes[alg[len(alg)-7:]] // ..._SHA_256
	digest := req.Message
	switch req.MessageType {
	case "", "RAW":
		hh := h.New()
		hh.Write(req.Message)
		digest = hh.Sum(nil)
	case "DIGEST":
		if len(digest) != h.Size() {
			return nil, kmsErr("ValidationException", "Digest is invalid length for algorithm %s.", alg)
		}
	default:
		return nil, kmsErr("ValidationException", "MessageType %s is not supported for key spec %s.", req.MessageType, k.spec)
	}
	if req.DryRun {
		return nil, kmsErr("DryRunOperationException", "The request would have succeeded, but the DryRun option is set.")
	}
	var (
		sig []byte
		err error
	)
	switch {
	case strings.HasPrefix(alg, "ECDSA_"):
		sig, err = ecdsa.SignASN1(rand.Reader, k.signer.(*ecdsa.PrivateKey), digest)
	case strings.HasPrefix(alg, "RSASSA_PSS_"):
		sig, err = rsa.SignPSS(rand.Reader, k.signer.(*rsa.PrivateKey), h, digest, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	default:
		sig, err = rsa.SignPKCS1v15(rand.Reader, k.signer.(*rsa.PrivateKey), h, digest)
	}
	if err != nil {
		return nil, kmsErr("KMSInternalException", "could not sign: %v", err)
	}
	return map[string]any{"KeyId": k.arn, "Signature": sig, "SigningAlgorithm": alg}, nil
}

func (s *Server) opScheduleKeyDeletion(body []byte) (any, *apiError) {
	var req struct {
		KeyId               string
		PendingWindowInDays *int
	}
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	days := 30
	if req.PendingWindowInDays != nil {
		days = *req.PendingWindowInDays
	}
	if days < 7 || days > 30 {
		return nil, kmsErr("ValidationException", "1 validation error detected: Value '%d' at 'pendingWindowInDays' failed to satisfy constraint: Member must have value between 7 and 30", days)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k, e := s.resolveKey(req.KeyId)
	if e != nil {
		return nil, e
	}
	if k.state == PendingDeletion {
		return nil, kmsErr("KMSInvalidStateException", "%s is pending deletion.", k.arn)
	}
	k.state = PendingDeletion
	k.deletion = time.Now().Add(time.Duration(days) * 24 * time.Hour)
	return map[string]any{
		"KeyId":               k.arn,
		"DeletionDate":        timePtr(k.deletion),
		"KeyState":            k.state,
		"PendingWindowInDays": days,
	}, nil
}

var aliasName = regexp.MustCompile(`^[a-zA-Z0-9:/_-]{1,256}$`)

func checkAliasName(name string) *apiError {
	switch {
	case !aliasName.MatchString(name):
		return kmsErr("ValidationException", "1 validation error detected: Value '%s' at 'aliasName' failed to satisfy constraint: Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$", name)
	case !strings.HasPrefix(name, "alias/") || name == "alias/":
		return kmsErr("InvalidAliasNameException", "Alias must start with the prefix \"alias/\".")
	case strings.HasPrefix(name, "alias/aws/"):
		return kmsErr("InvalidAliasNameException", "Alias %s must not begin with alias/aws/, which is reserved for AWS managed keys.", name)
	}
	return nil
}

type aliasRequest struct{ AliasName, TargetKeyId string }

// aliasTarget checks an alias request and finds its target key. s.mu is
// held.
func (s *Server) aliasTarget(req aliasRequest) (*key, *apiError) {
	if e := checkAliasName(req.AliasName); e != nil {
		return nil, e
	}
	k, e := s.resolveKey(req.TargetKeyId)
	if e != nil {
		return nil, e
	}
	if k.state == PendingDeletion {
		return nil, kmsErr("KMSInvalidStateException", "%s is pending deletion.", k.arn)
	}
	return k, nil
}

func (s *Server) opCreateAlias(body []byte) (any, *apiError) {
	var req aliasRequest
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k, e := s.aliasTarget(req)
	if e != nil {
		return nil, e
	}
	if _, ok := s.aliases[req.AliasName]; ok {
		return nil, kmsErr("AlreadyExistsException", "An alias with the name %s already exists", s.aliasARN(req.AliasName))
	}
	now := time.Now()
	s.aliases[req.AliasName] = &alias{target: k.id, created: now, updated: now}
	return struct{}{}, nil
}

func (s *Server) opUpdateAlias(body []byte) (any, *apiError) {
	var req aliasRequest
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k, e := s.aliasTarget(req)
	if e != nil {
		return nil, e
	}
	a, ok := s.aliases[req.AliasName]
	if !ok {
		return nil, kmsErr("NotFoundException", "Alias %s is not found.", s.aliasARN(req.AliasName))
	}
	if old, ok := s.keys[a.target]; ok && old.usage != k.usage {
		return nil, kmsErr("ValidationException", "%s and %s must have the same key usage", old.arn, k.arn)
	}
	a.target, a.updated = k.id, time.Now()
	return struct{}{}, nil
}

func (s *Server) opDeleteAlias(body []byte) (any, *apiError) {
	var req aliasRequest
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	if e := checkAliasName(req.AliasName); e != nil {
		return nil, e
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.aliases[req.AliasName]; !ok {
		return nil, kmsErr("NotFoundException", "Alias %s is not found.", s.aliasARN(req.AliasName))
	}
	delete(s.aliases, req.AliasName)
	return struct{}{}, nil
}

type listRequest struct {
	KeyId  string
	Limit  *int
	Marker string
}

// page returns the range of n items a list request asks for, with the
// marker of the next page ("" for the last). Markers are opaque to clients.
func page(n int, req listRequest, defaultLimit, maxLimit int) (start, end int, next string, _ *apiError) {
	limit := defaultLimit
	if req.Limit != nil {
		limit = *req.Limit
	}
	if limit < 1 || limit > maxLimit {
		return 0, 0, "", kmsErr("ValidationException", "1 validation error detected: Value '%d' at 'limit' failed to satisfy constraint: Member must have value between 1 and %d", limit, maxLimit)
	}
	if req.Marker != "" {
		b, err := base64.RawURLEncoding.DecodeString(req.Marker)
		v, ok := strings.CutPrefix(string(b), "kmstest:")
		var err2 error
		start, err2 = strconv.Atoi(v)
		if err != nil || !ok || err2 != nil || start < 0 || start > n {
			return 0, 0, "", kmsErr("InvalidMarkerException", "Marker is invalid")
		}
	}
	end = min(n, start+min(limit, maxPage))
	if end < n {
		next = base64.RawURLEncoding.EncodeToString([]byte("kmstest:" + strconv.Itoa(end)))
	}
	return start, end, next, nil
}

func listResponse(field string, items any, next string) map[string]any {
	out := map[string]any{field: items, "Truncated": next != ""}
	if next != "" {
		out["NextMarker"] = next
	}
	return out
}

func (s *Server) opListAliases(body []byte) (any, *apiError) {
	var req listRequest
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var only string
	if req.KeyId != "" {
		k, e := s.resolveKey(req.KeyId)
		if e != nil {
			return nil, e
		}
		only = k.id
	}
	type entry struct {
		AliasName, AliasArn, TargetKeyId string
		CreationDate, LastUpdatedDate    *epoch
	}
	var all []entry
	for _, name := range slices.Sorted(maps.Keys(s.aliases)) {
		a := s.aliases[name]
		if only == "" || a.target == only {
			all = append(all, entry{name, s.aliasARN(name), a.target, timePtr(a.created), timePtr(a.updated)})
		}
	}
	start, end, next, e := page(len(all), req, 50, 100)
	if e != nil {
		return nil, e
	}
	return listResponse("Aliases", append([]entry{}, all[start:end]...), next), nil
}

func (s *Server) opListKeys(body []byte) (any, *apiError) {
	var req listRequest
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	start, end, next, e := page(len(s.order), req, 100, 1000)
	if e != nil {
		return nil, e
	}
	type entry struct{ KeyId, KeyArn string }
	keys := []entry{}
	for _, k := range s.order[start:end] {
		keys = append(keys, entry{k.id, k.arn})
	}
	return listResponse("Keys", keys, next), nil
}

func (s *Server) opListResourceTags(body []byte) (any, *apiError) {
	var req listRequest
	if e := decode(body, &req); e != nil {
		return nil, e
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k, e := s.resolveKey(req.KeyId)
	if e != nil {
		return nil, e
	}
	start, end, next, e := page(len(k.tags), req, 50, 50)
	if e != nil {
		return nil, e
	}
	return listResponse("Tags", append([]tag{}, k.tags[start:end]...), next), nil
}
