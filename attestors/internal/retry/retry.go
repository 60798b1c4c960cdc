// Package retry retries the metadata requests of the cloud node attestors'
// agent halves: a metadata service that is briefly unreachable or busy is
// common at boot, a refusal is not worth repeating.
package retry

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Permanent marks a failure that retrying will not fix.
type Permanent struct{ Err error }

func (e Permanent) Error() string { return e.Err.Error() }
func (e Permanent) Unwrap() error { return e.Err }

// Do calls f up to attempts times, waiting delay, then twice that, and so on,
// between calls. It stops early at a Permanent error or when ctx ends; the
// error then says what it was doing (what) and the last failure.
func Do[T any](ctx context.Context, what string, attempts int, delay time.Duration, f func(context.Context) (T, error)) (T, error) {
	var zero T
	var err error
	for i := range attempts {
		if i > 0 {
			t := time.NewTimer(delay)
			select {
			case <-ctx.Done():
				t.Stop()
				return zero, fmt.Errorf("could not %s: %w (last error: %v)", what, ctx.Err(), err)
			case <-t.C:
			}
			delay *= 2
		}
		var v T
		if v, err = f(ctx); err == nil {
			return v, nil
		}
		if _, ok := err.(Permanent); ok || ctx.Err() != nil {
			return zero, fmt.Errorf("could not %s: %w", what, err)
		}
	}
	return zero, fmt.Errorf("could not %s after %d attempts: %w", what, attempts, err)
}

// Snippet shows the start of an unexpected answer in an error, printable and
// quoted.
func Snippet(b []byte) string {
	const n = 120
	s := strings.ToValidUTF8(string(b), "?")
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if len(s) > n {
		s = s[:n] + "…"
	}
	if s == "" {
		return "(empty)"
	}
	return fmt.Sprintf("%q", s)
}
