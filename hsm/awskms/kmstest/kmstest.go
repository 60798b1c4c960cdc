package kmstest

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/google/uuid"
)

// The fake's region, account and the only credentials it accepts.
const (
	Region          = "us-east-1"
	AccountID       = "111122223333"
	AccessKeyID     = "AKIAKMSTESTPLINTH000"
	SecretAccessKey = "kmstest/plinth/secret/access/key/00000000"
)

// Credentials returns a provider of the static credentials the fake accepts.
func Credentials() aws.CredentialsProvider {
	return aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{AccessKeyID: AccessKeyID, SecretAccessKey: SecretAccessKey, Source: "kmstest"}, nil
	})
}

// Key states, as KMS names them.
const (
	Enabled         = "Enabled"
	Disabled        = "Disabled"
	PendingDeletion = "PendingDeletion"
)

// maxPage is the most items a list operation returns at once.
const maxPage = 10

// Server is a fake KMS. It is safe for concurrent use; Close it when done.
type Server struct {
	*httptest.Server

	mu      sync.Mutex
	keys    map[string]*key // by key ID
	order   []*key          // in creation order, for ListKeys
	aliases map[string]*alias
	faults  []*Fault
	calls   map[string]int
}

type key struct {
	id, arn     string
	spec, usage string
	origin      string
	description string
	state       string
	created     time.Time
	deletion    time.Time // when state is PendingDeletion
	tags        []tag
	signer      crypto.Signer
	pub         []byte // PKIX DER
}

type tag struct {
	TagKey, TagValue string
}

type alias struct {
	target           string // key ID
	created, updated time.Time
}

// KeyInfo describes a key the fake holds.
type KeyInfo struct {
	ID, ARN      string
	Spec, Usage  string // ECC_NIST_P256, SIGN_VERIFY
	Origin       string // AWS_KMS or EXTERNAL
	State        string // Enabled, Disabled or PendingDeletion
	Created      time.Time
	DeletionDate time.Time // zero unless State is PendingDeletion
	Tags         map[string]string
	Aliases      []string // the alias names that point to the key, sorted
}

// New starts a fake KMS that holds no keys.
func New() *Server {
	s := &Server{
		keys:    make(map[string]*key),
		aliases: make(map[string]*alias),
		calls:   make(map[string]int),
	}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

// Fault makes calls to one operation fail with a KMS error.
type Fault struct {
	Op      string // the operation, such as "Sign"
	Err     string // the error's __type, such as "ThrottlingException"
	Message string // the error's message; empty for a KMS-like one
	Skip    int    // calls to let through before failing
	Times   int    // calls to fail; negative for every call
	// After carries the call out and then fails it, as when KMS acted but
	// its response was lost.
	After bool
}

// Inject adds a fault. Faults on one operation apply in the order injected:
// a call is decided by the first one that is not used up.
func (s *Server) Inject(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &f)
}

// Fail makes the next times calls to op fail with the KMS error errType
// (every call if times is negative), before they take effect.
func (s *Server) Fail(op, errType string, times int) {
	s.Inject(Fault{Op: op, Err: errType, Times: times})
}

// Throttle makes the next times calls to op fail with a ThrottlingException
// (every call if times is negative).
func (s *Server) Throttle(op string, times int) {
	s.Fail(op, "ThrottlingException", times)
}

// Calls returns how many calls to op the fake has received, failed ones
// included.
func (s *Server) Calls(op string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[op]
}

// Keys returns every key the fake holds, in the order they were created.
func (s *Server) Keys() []KeyInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	infos := make([]KeyInfo, 0, len(s.order))
	for _, k := range s.order {
		infos = append(infos, s.info(k))
	}
	return infos
}

// Key returns the key that ref (a key ID, key ARN, alias name or alias ARN)
// names.
func (s *Server) Key(ref string) (KeyInfo, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, err := s.resolve(ref)
	if err != nil {
		return KeyInfo{}, false
	}
	return s.info(k), true
}

// Aliases returns every alias name with the ID of the key it points to.
func (s *Server) Aliases() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[string]string, len(s.aliases))
	for name, a := range s.aliases {
		m[name] = a.target
	}
	return m
}

// AddKey creates an Enabled key for SIGN_VERIFY behind the client's back.
// origin is AWS_KMS (or empty) or EXTERNAL, for a key whose material was
// imported.
func (s *Server) AddKey(spec, origin string, tags map[string]string) (KeyInfo, error) {
	if origin == "" {
		origin = "AWS_KMS"
	}
	if origin != "AWS_KMS" && origin != "EXTERNAL" {
		return KeyInfo{}, fmt.Errorf("kmstest: origin %q is not AWS_KMS or EXTERNAL", origin)
	}
	var tl []tag
	for _, k := range slices.Sorted(maps.Keys(tags)) {
		tl = append(tl, tag{k, tags[k]})
	}
	k, kerr := s.createKey(spec, "SIGN_VERIFY", origin, "", tl)
	if kerr != nil {
		return KeyInfo{}, fmt.Errorf("kmstest: %s", kerr.Message)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.info(k), nil
}

// SetAlias points the alias name at the key ref names, creating the alias
// if there is none, behind the client's back.
func (s *Server) SetAlias(name, ref string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, err := s.resolve(ref)
	if err != nil {
		return errors.New("kmstest: " + err.Message)
	}
	now := time.Now()
	if a, ok := s.aliases[name]; ok {
		a.target, a.updated = k.id, now
	} else {
		s.aliases[name] = &alias{target: k.id, created: now, updated: now}
	}
	return nil
}

// SetKeyState puts the key ref names in state (Enabled, Disabled or
// PendingDeletion, the last with a 7-day window) behind the client's back.
func (s *Server) SetKeyState(ref, state string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, err := s.resolve(ref)
	if err != nil {
		return errors.New("kmstest: " + err.Message)
	}
	switch state {
	case Enabled, Disabled:
		k.deletion = time.Time{}
	case PendingDeletion:
		k.deletion = time.Now().Add(7 * 24 * time.Hour)
	default:
		return fmt.Errorf("kmstest: key state %q is not Enabled, Disabled or PendingDeletion", state)
	}
	k.state = state
	return nil
}

// DeleteKey deletes the key ref names, with every alias that points to it,
// behind the client's back: as KMS does when a deletion's waiting period
// ends. Calls that name the key then fail with a NotFoundException.
func (s *Server) DeleteKey(ref string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, err := s.resolve(ref)
	if err != nil {
		return errors.New("kmstest: " + err.Message)
	}
	delete(s.keys, k.id)
	s.order = slices.DeleteFunc(s.order, func(o *key) bool { return o == k })
	maps.DeleteFunc(s.aliases, func(_ string, a *alias) bool { return a.target == k.id })
	return nil
}

// info describes k. s.mu is held.
func (s *Server) info(k *key) KeyInfo {
	ki := KeyInfo{
		ID: k.id, ARN: k.arn, Spec: k.spec, Usage: k.usage, Origin: k.origin,
		State: k.state, Created: k.created, DeletionDate: k.deletion,
		Tags: make(map[string]string, len(k.tags)),
	}
	for _, t := range k.tags {
		ki.Tags[t.TagKey] = t.TagValue
	}
	for name, a := range s.aliases {
		if a.target == k.id {
			ki.Aliases = append(ki.Aliases, name)
		}
	}
	slices.Sort(ki.Aliases)
	return ki
}

// apiError is a KMS error response.
type apiError struct {
	Type    string `json:"__type"`
	Message string `json:"message"`
}

func kmsErr(typ, format string, args ...any) *apiError {
	return &apiError{Type: typ, Message: fmt.Sprintf(format, args...)}
}

// status returns the HTTP status KMS answers the error with.
func (e *apiError) status() int {
	switch e.Type {
	case "KMSInternalException", "KeyUnavailableException":
		return http.StatusInternalServerError
	case "DependencyTimeoutException":
		return http.StatusServiceUnavailable
	case "DryRunOperationException":
		return http.StatusPreconditionFailed
	}
	return http.StatusBadRequest
}

// operation handles one KMS operation's request body. It takes s.mu itself.
type operation func(s *Server, body []byte) (any, *apiError)

var operations = map[string]operation{
	"CreateKey":           (*Server).opCreateKey,
	"DescribeKey":         (*Server).opDescribeKey,
	"GetPublicKey":        (*Server).opGetPublicKey,
	"Sign":                (*Server).opSign,
	"ScheduleKeyDeletion": (*Server).opScheduleKeyDeletion,
	"CreateAlias":         (*Server).opCreateAlias,
	"UpdateAlias":         (*Server).opUpdateAlias,
	"DeleteAlias":         (*Server).opDeleteAlias,
	"ListAliases":         (*Server).opListAliases,
	"ListKeys":            (*Server).opListKeys,
	"ListResourceTags":    (*Server).opListResourceTags,
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("x-amzn-RequestId", uuid.NewString())
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		writeError(w, kmsErr("SerializationException", "could not read the request body"))
		return
	}
	op, ok := strings.CutPrefix(r.Header.Get("X-Amz-Target"), "TrentService.")
	if r.Method != http.MethodPost || !ok {
		writeError(w, kmsErr("UnknownOperationException", ""))
		return
	}
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/x-amz-json-1.1" {
		writeError(w, kmsErr("SerializationException", "Content-Type %q is not application/x-amz-json-1.1", r.Header.Get("Content-Type")))
		return
	}
	if e := authenticate(r, body); e != nil {
		writeError(w, e)
		return
	}
	handle, ok := operations[op]
	if !ok {
		writeError(w, kmsErr("UnknownOperationException", ""))
		return
	}
	if !json.Valid(body) {
		writeError(w, kmsErr("SerializationException", "the request body is not JSON"))
		return
	}

	s.mu.Lock()
	s.calls[op]++
	f := s.takeFault(op)
	s.mu.Unlock()
	if f != nil && !f.After {
		writeError(w, s.faultError(f, body))
		return
	}
	out, e := handle(s, body)
	switch {
	case f != nil:
		writeError(w, s.faultError(f, body))
	case e != nil:
		writeError(w, e)
	default:
		writeJSON(w, http.StatusOK, out)
	}
}

// takeFault returns the fault that decides a call to op, or nil. s.mu is
// held.
func (s *Server) takeFault(op string) *Fault {
	for _, f := range s.faults {
		if f.Op != op || f.Times == 0 {
			continue
		}
		if f.Skip > 0 {
			f.Skip--
			return nil
		}
		if f.Times > 0 {
			f.Times--
		}
		return f
	}
	return nil
}

// faultError is the error f makes, with a message like KMS's.
func (s *Server) faultError(f *Fault, body []byte) *apiError {
	if f.Message != "" {
		return kmsErr(f.Err, "%s", f.Message)
	}
	switch f.Err {
	case "ThrottlingException":
		return kmsErr(f.Err, "Rate exceeded")
	case "AccessDeniedException":
		msg := fmt.Sprintf("User: arn:aws:iam::%s:user/kmstest is not authorized to perform: kms:%s", AccountID, f.Op)
		var req struct{ KeyId, TargetKeyId string }
		_ = json.Unmarshal(body, &req)
		s.mu.Lock()
		k, err := s.resolve(req.KeyId + req.TargetKeyId)
		s.mu.Unlock()
		if err == nil {
			msg += " on resource: " + k.arn
		}
		return kmsErr(f.Err, "%s because no identity-based policy allows the kms:%s action", msg, f.Op)
	case "KMSInternalException":
		return kmsErr(f.Err, "An internal error occurred.")
	}
	return kmsErr(f.Err, "%s injected by kmstest", f.Err)
}

func writeError(w http.ResponseWriter, e *apiError) {
	writeJSON(w, e.status(), e)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"__type":"KMSInternalException","message":"kmstest: could not encode the response"}`)
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.WriteHeader(status)
	w.Write(b)
}
