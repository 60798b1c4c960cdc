package gcpiit

import "github.com/plinth-id/plinth/attestors/internal/jwks"

// The signing keys a token is checked against (shared with the other
// JWT-based attestors).
type (
	KeySource      = jwks.KeySource
	StaticKeys     = jwks.StaticKeys
	KeySources     = jwks.KeySources
	HTTPKeys       = jwks.HTTPKeys
	HTTPKeysConfig = jwks.HTTPKeysConfig
)

// ErrUnknownKey is returned by a KeySource that has no key with the ID.
var ErrUnknownKey = jwks.ErrUnknownKey

// ParseJWKS parses a JSON Web Key Set of RSA signing keys.
func ParseJWKS(b []byte) (*StaticKeys, error) { return jwks.ParseJWKS(b) }

// NewHTTPKeys returns a key source that downloads and caches a JWKS.
func NewHTTPKeys(c HTTPKeysConfig) (*HTTPKeys, error) { return jwks.NewHTTPKeys(c) }
