package retry

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestDo(t *testing.T) {
	ctx := context.Background()
	calls := 0
	v, err := Do(ctx, "fetch", 3, time.Microsecond, func(context.Context) (int, error) {
		calls++
		if calls < 3 {
			return 0, errors.New("busy")
		}
		return 7, nil
	})
	if v != 7 || err != nil || calls != 3 {
		t.Fatalf("Do = %d, %v after %d calls; want 7 after 3", v, err, calls)
	}
	calls = 0
	_, err = Do(ctx, "fetch", 3, time.Microsecond, func(context.Context) (int, error) {
		calls++
		return 0, Permanent{Err: errors.New("forbidden")}
	})
	if calls != 1 || err == nil || err.Error() != "could not fetch: forbidden" {
		t.Fatalf("Do with a permanent error = %v after %d calls", err, calls)
	}
	_, err = Do(ctx, "fetch", 2, time.Microsecond, func(context.Context) (int, error) { return 0, errors.New("busy") })
	if err == nil || err.Error() != "could not fetch after 2 attempts: busy" {
		t.Fatalf("Do out of attempts = %v", err)
	}
}
