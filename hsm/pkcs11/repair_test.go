package pkcs11

import (
	"fmt"
	"testing"
	"time"
)

// Handles in these tables: 1x are the old pair, 2x the new (pending) pair,
// 3x another pending pair; x1 is the private half, x2 the public half.
const (
	tagA = "aaaaaaaaaaaaaaaa"
	tagB = "bbbbbbbbbbbbbbbb"
)

func priv(h uint, label string) object { return object{handle: h, private: true, label: label} }
func pub(h uint, label string) object  { return object{handle: h, label: label} }

func destroyOf(h uint) action            { return action{handle: h, destroy: true} }
func relabelOf(h uint, id string) action { return action{handle: h, relabel: id} }
func want(acts ...action) []action       { return acts }

func describe(acts []action, n int) string { return fmt.Sprintf("%v, removed %d", acts, n) }

func TestRepairPlan(t *testing.T) {
	const id = "x509-ca-A"
	p := id + pendingMark + tagA
	q := id + pendingMark + tagB
	tests := []struct {
		name    string
		objs    []object
		want    []action
		removed int
	}{
		{"nothing", nil, nil, 0},
		{"complete key", []object{priv(11, id), pub(12, id)}, nil, 0},
		{"crash after generating: the old key stays",
			[]object{priv(11, id), pub(12, id), priv(21, p), pub(22, p)},
			want(destroyOf(21), destroyOf(22)), 1},
		{"crash during generation: half a pending pair",
			[]object{priv(11, id), pub(12, id), pub(22, p)},
			want(destroyOf(22)), 1},
		{"crash after the commit point: the new key takes over",
			[]object{pub(12, id), priv(21, p), pub(22, p)},
			want(destroyOf(12), relabelOf(22, id), relabelOf(21, id)), 1},
		{"crash after deleting the old public key",
			[]object{priv(21, p), pub(22, p)},
			want(relabelOf(22, id), relabelOf(21, id)), 0},
		{"crash after relabelling the public key",
			[]object{pub(22, id), priv(21, p)},
			want(relabelOf(21, id)), 0},
		{"first key, crash after generating: it becomes the key",
			[]object{priv(21, p), pub(22, p)},
			want(relabelOf(22, id), relabelOf(21, id)), 0},
		{"crash during DeleteKey: the public key is left, and stays",
			[]object{pub(12, id)},
			nil, 0},
		{"two pending pairs and no key: the later tag wins",
			[]object{priv(21, p), pub(22, p), priv(31, q), pub(32, q)},
			want(relabelOf(32, id), relabelOf(31, id), destroyOf(21), destroyOf(22)), 1},
		{"two pending pairs, one half relabelled: that one wins",
			[]object{pub(22, id), priv(21, p), priv(31, q), pub(32, q)},
			want(relabelOf(21, id), destroyOf(31), destroyOf(32)), 1},
		{"two IDs, in order",
			[]object{priv(21, "b"+pendingMark+tagA), pub(22, "b"+pendingMark+tagA), pub(32, "a"+pendingMark+tagB)},
			want(destroyOf(32), relabelOf(22, "b"), relabelOf(21, "b")), 1},
		{"a label that only looks pending is a key of its own",
			[]object{priv(41, id+".pending-123"), pub(42, id+".pending-123")},
			nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			acts, n := planRepair(tt.objs)
			if describe(acts, n) != describe(tt.want, tt.removed) {
				t.Errorf("planRepair:\n got %s\nwant %s", describe(acts, n), describe(tt.want, tt.removed))
			}
			// A repair is itself safe to interrupt: applying any prefix of
			// its actions, then planning again, ends in the same place.
			for i := range acts {
				rest, _ := planRepair(apply(tt.objs, acts[:i]))
				if got, want := apply(apply(tt.objs, acts[:i]), rest), apply(tt.objs, acts); fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("interrupted after %d actions: ends with %v, want %v", i, got, want)
				}
			}
		})
	}
}

// apply returns objs after the actions.
func apply(objs []object, acts []action) []object {
	out := append([]object(nil), objs...)
	for _, a := range acts {
		for i, o := range out {
			if o.handle != a.handle {
				continue
			}
			if a.destroy {
				out = append(out[:i], out[i+1:]...)
			} else {
				out[i].label = a.relabel
			}
			break
		}
	}
	return out
}

func TestParseLabel(t *testing.T) {
	tests := []struct{ label, id, tag string }{
		{"x509-ca-A", "x509-ca-A", ""},
		{"x509-ca-A.pending-0123456789abcdef", "x509-ca-A", "0123456789abcdef"},
		{"x509-ca-A.pending-0123456789ABCDEF", "x509-ca-A.pending-0123456789ABCDEF", ""},
		{"x509-ca-A.pending-0123", "x509-ca-A.pending-0123", ""},
		{".pending-0123456789abcdef", "", "0123456789abcdef"},
	}
	for _, tt := range tests {
		if id, tag := parseLabel(tt.label); id != tt.id || tag != tt.tag {
			t.Errorf("parseLabel(%q) = %q, %q; want %q, %q", tt.label, id, tag, tt.id, tt.tag)
		}
	}
}

func TestURI(t *testing.T) {
	tests := []struct{ token, object, want string }{
		{"plinth", "x509-ca-A", "pkcs11:token=plinth;object=x509-ca-A"},
		{"my token", "plinth/example.org/x509-ca-A", "pkcs11:token=my%20token;object=plinth%2Fexample.org%2Fx509-ca-A"},
		{"a;b?c", "é%", "pkcs11:token=a%3Bb%3Fc;object=%C3%A9%25"},
	}
	for _, tt := range tests {
		if got := uri(tt.token, tt.object); got != tt.want {
			t.Errorf("uri(%q, %q) = %q, want %q", tt.token, tt.object, got, tt.want)
		}
	}
}

func TestBackoff(t *testing.T) {
	c := Config{Module: "m", TokenLabel: "t", PIN: "p"}
	if err := c.validate(); err != nil {
		t.Fatal(err)
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second, time.Minute, time.Minute}
	for i, w := range want {
		if got := c.backoff(i + 1); got != w {
			t.Errorf("backoff(%d) = %v, want %v", i+1, got, w)
		}
	}
}
