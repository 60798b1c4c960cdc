//go:build cgo

package pkcs11

// SetCrash makes m's GenerateKey stop after a step, as a crash would, when f
// returns an error for it.
func SetCrash(m *Manager, f func(step string) error) { m.crash = f }

// ReopenAttempts returns how many times m tried to reopen its token.
func ReopenAttempts(m *Manager) int64 { return m.attempts.Load() }

// Reopens returns how many times m reopened its token.
func Reopens(m *Manager) int64 { return m.reopens.Load() }
