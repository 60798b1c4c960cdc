package conf

import (
	"log/slog"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/plinth-id/plinth/hsm"
)

// This file decodes the keys the server and agent blocks share.

// HealthChecks is the health_checks block: an HTTP listener answering
// liveness and readiness probes.
type HealthChecks struct {
	ListenerEnabled bool   // default false
	BindAddress     string // default "localhost"
	BindPort        int    // default 80, as SPIRE
	LivePath        string // default "/live"
	ReadyPath       string // default "/ready"
}

func decodeHealthChecks(top *block) HealthChecks {
	b := top.object("health_checks", "health_checks block")
	h := HealthChecks{
		ListenerEnabled: b.boolean("listener_enabled", false),
		BindAddress:     b.string("bind_address", "localhost"),
		BindPort:        b.port("bind_port", 80),
		LivePath:        urlPath(b, "live_path", "/live"),
		ReadyPath:       urlPath(b, "ready_path", "/ready"),
	}
	b.end()
	return h
}

func urlPath(b *block, key, def string) string {
	s, pos, ok := b.str(key)
	if !ok || s == "" {
		return def
	}
	if !strings.HasPrefix(s, "/") {
		b.d.errorf(pos, `%s: %q must start with "/"`, key, s)
		return def
	}
	return s
}

func trustDomain(b *block) spiffeid.TrustDomain {
	s, pos, ok := b.required("trust_domain")
	if !ok {
		return spiffeid.TrustDomain{}
	}
	td, err := spiffeid.TrustDomainFromString(s)
	if err != nil {
		b.d.errorf(pos, "trust_domain: %q is not a trust domain: %v", s, err)
	}
	return td
}

func logLevel(b *block) slog.Level {
	s, pos, ok := b.str("log_level")
	if !ok || s == "" {
		return slog.LevelInfo
	}
	switch strings.ToUpper(s) {
	case "DEBUG":
		return slog.LevelDebug
	case "INFO":
		return slog.LevelInfo
	case "WARN":
		return slog.LevelWarn
	case "ERROR":
		return slog.LevelError
	}
	b.d.errorf(pos, "log_level: unknown level %q (want DEBUG, INFO, WARN or ERROR)", s)
	return slog.LevelInfo
}

// logFormat returns "text" or "json".
func logFormat(b *block) string {
	s, pos, ok := b.str("log_format")
	if !ok || s == "" {
		return "text"
	}
	switch f := strings.ToLower(s); f {
	case "text", "json":
		return f
	}
	b.d.errorf(pos, "log_format: unknown format %q (want text or json)", s)
	return "text"
}

func keyType(b *block, key string, def hsm.KeyType) hsm.KeyType {
	s, pos, ok := b.str(key)
	if !ok || s == "" {
		return def
	}
	t, err := hsm.ParseKeyType(s)
	if err != nil {
		b.d.errorf(pos, "%s: %s", key, strings.TrimPrefix(err.Error(), "hsm: "))
		return def
	}
	return t
}
