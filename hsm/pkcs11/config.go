package pkcs11

import (
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"time"
)

// Config says which PKCS#11 module and token hold the keys, and how to log
// in. Parse it at the edge (cmd, conf); New validates it.
type Config struct {
	// Module is the path of the PKCS#11 module (shared library), such as
	// /usr/lib/softhsm/libsofthsm2.so.
	Module string
	// TokenLabel selects the token by its label (at most 32 bytes). Slot
	// numbers are not stable: SoftHSM moves a token to a new slot when it is
	// initialized, and real HSMs renumber slots when tokens come and go.
	TokenLabel string
	// PIN is the token's user PIN. The caller reads it from a file or an
	// environment variable, never from the configuration file. It is never
	// logged nor put in an error; String and LogValue leave it out.
	PIN string
	// KeyIDPrefix is prepended to every key ID to make the keys' CKA_LABEL
	// and CKA_ID, so that several servers can share a token: with
	// "plinth/example.org/", key "x509-ca-A" is the object labelled
	// "plinth/example.org/x509-ca-A". A manager sees only the keys under its
	// prefix; the empty prefix sees every key pair on the token.
	KeyIDPrefix string
	// ReopenBackoff is how long the manager waits after a failed attempt to
	// reopen the token before it tries again; the wait doubles with every
	// failure up to MaxReopenBackoff. Defaults: 1s and 1m.
	ReopenBackoff, MaxReopenBackoff time.Duration
	// Clock returns the current time; default time.Now.
	Clock func() time.Time
	// Log receives what the Manager does beyond the call at hand: the
	// token going away and coming back, repairs of interrupted key
	// replacements. Nil discards.
	Log *slog.Logger
}

// String describes c without its PIN.
func (c Config) String() string {
	return fmt.Sprintf("pkcs11.Config{Module: %q, TokenLabel: %q, KeyIDPrefix: %q, PIN: %s}", c.Module, c.TokenLabel, c.KeyIDPrefix, redacted(c.PIN))
}

// GoString is String, so that %#v does not print the PIN either.
func (c Config) GoString() string { return c.String() }

// LogValue describes c for log/slog without its PIN.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("module", c.Module),
		slog.String("token", c.TokenLabel),
		slog.String("key_id_prefix", c.KeyIDPrefix),
		slog.String("pin", redacted(c.PIN)),
	)
}

func redacted(pin string) string {
	if pin == "" {
		return "(empty)"
	}
	return "(redacted)"
}

// ErrUnavailable is wrapped by the errors of a manager whose token cannot be
// reached: the HSM is down, the token was removed, its sessions were closed
// or the module lost its state. The manager reopens the token by itself
// (with backoff) and works again once the token is back, without a restart;
// until then its calls fail fast. A caller reports "cannot sign" and keeps
// serving what it already has.
var ErrUnavailable = errors.New("pkcs11: token unavailable")

// unavailableError says why a token is unavailable; it wraps the cause and
// matches ErrUnavailable.
type unavailableError struct {
	token string
	cause error
}

func (e *unavailableError) Error() string {
	return fmt.Sprintf("token %q is unavailable: %v", e.token, e.cause)
}

func (e *unavailableError) Is(target error) bool { return target == ErrUnavailable }
func (e *unavailableError) Unwrap() error        { return e.cause }

// errClosed is returned by a Manager, and the keys it returned, after Close.
var errClosed = errors.New("the manager is closed")

func (c *Config) validate() error {
	switch {
	case c.Module == "":
		return errors.New("pkcs11: module path is empty")
	case c.TokenLabel == "":
		return errors.New("pkcs11: token label is empty")
	case len(c.TokenLabel) > 32:
		return fmt.Errorf("pkcs11: token label %q is longer than 32 bytes, the most PKCS#11 allows", c.TokenLabel)
	case c.PIN == "":
		return errors.New("pkcs11: PIN is empty")
	case c.ReopenBackoff < 0 || c.MaxReopenBackoff < 0:
		return errors.New("pkcs11: reopen backoff is negative")
	}
	if c.ReopenBackoff == 0 {
		c.ReopenBackoff = time.Second
	}
	if c.MaxReopenBackoff == 0 {
		c.MaxReopenBackoff = time.Minute
	}
	c.MaxReopenBackoff = max(c.MaxReopenBackoff, c.ReopenBackoff)
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return nil
}

// backoff is the wait after the nth consecutive failure (n ≥ 1).
func (c *Config) backoff(n int) time.Duration {
	d := c.ReopenBackoff
	for i := 1; i < n && d < c.MaxReopenBackoff; i++ {
		d *= 2
	}
	return min(d, c.MaxReopenBackoff)
}

// A key pair being created by GenerateKey is labelled (CKA_LABEL and CKA_ID)
// with its final label plus pendingMark and a random tag of 16 hex digits,
// until it replaces the key under the final label. IDs that look like such a
// label are refused.
const pendingMark = ".pending-"

var pendingSuffix = regexp.MustCompile(`\.pending-[0-9a-f]{16}$`)

// parseLabel splits an object's label (without the manager's prefix) into
// the key ID and, for a pending key, its tag.
func parseLabel(label string) (id, tag string) {
	if loc := pendingSuffix.FindStringIndex(label); loc != nil {
		return label[:loc[0]], label[loc[0]+len(pendingMark):]
	}
	return label, ""
}

func checkID(id string) error {
	switch {
	case id == "":
		return errors.New("key id is empty")
	case pendingSuffix.MatchString(id):
		return fmt.Errorf("key id %q ends like the label of a key being generated (%s and 16 hex digits), which is reserved", id, pendingMark)
	}
	return nil
}

// uri returns the RFC 7512 PKCS#11 URI of an object on a token,
// pkcs11:token=…;object=…, with each value percent-encoded as the RFC's
// path attributes require.
func uri(token, object string) string {
	return "pkcs11:token=" + pctEncode(token) + ";object=" + pctEncode(object)
}

func pctEncode(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~:[]@!$'()*+,=&", c) >= 0 {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}
