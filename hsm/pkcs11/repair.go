package pkcs11

import (
	"maps"
	"slices"
)

// Replacing a key on a token
//
// PKCS#11 has no transactions: a key pair is two objects, and GenerateKey
// must swap the pair under an ID for a new one with several calls, any of
// which a crash (or the HSM going away) can interrupt. The scheme, for the
// ID's label L (prefix + ID):
//
//  1. generate the new pair under the pending label P = L + ".pending-" + a
//     random tag (both halves: CKA_LABEL = CKA_ID = P);
//  2. destroy the old private key(s) labelled L; this is the commit point;
//  3. destroy the old public key(s) labelled L;
//  4. relabel the new public key from P to L;
//  5. relabel the new private key from P to L (CKA_LABEL and CKA_ID, in one
//     C_SetAttributeValue per object).
//
// DeleteKey is steps 2 and 3. The rule that resolves any interrupted state
// is that a pending pair is committed exactly when no private key is
// labelled L: before step 2 the old key is the ID's key, from step 2 on the
// new one is. planRepair applies the rule, so that a crash at any point
// leaves the ID with the old key or the new one, never neither (the new one
// may still carry its pending label until a repair relabels it) and never
// two: New repairs the namespace before it returns, GetKey and DeleteKey
// repair it when they cannot find an ID, ListKeys when it sees a committed
// pending key, and Sweep removes what is left. The commit point is one
// C_DestroyObject, which the token does or does not do.
//
// The scheme assumes one writing process per namespace: the Managers of one
// process share a lock per token; processes that share a token use
// distinct KeyIDPrefixes.

// object is what the repair needs to know of a key object on the token.
type object struct {
	handle  uint
	private bool   // CKO_PRIVATE_KEY; else CKO_PUBLIC_KEY
	label   string // CKA_LABEL without the manager's prefix
}

// action is a step of a repair: destroy the object, or relabel it to a key
// ID (CKA_LABEL and CKA_ID become prefix + ID).
type action struct {
	handle  uint
	destroy bool
	relabel string
}

// halves holds the handles of the objects of one label.
type halves struct{ priv, pub []uint }

// planRepair returns the actions that finish or undo every interrupted
// replacement among objs, in an order that a crash can again interrupt
// safely, and how many keys they remove (pending keys that lost, and the
// public halves of keys that a committed replacement destroyed). It destroys
// only objects with a pending label, and public keys under an ID whose
// pending key it commits.
func planRepair(objs []object) (acts []action, removed int) {
	type idObjects struct {
		main    halves
		pending map[string]*halves // by tag
	}
	ids := make(map[string]*idObjects)
	for _, o := range objs {
		id, tag := parseLabel(o.label)
		g := ids[id]
		if g == nil {
			g = &idObjects{pending: make(map[string]*halves)}
			ids[id] = g
		}
		h := &g.main
		if tag != "" {
			if h = g.pending[tag]; h == nil {
				h = new(halves)
				g.pending[tag] = h
			}
		}
		if o.private {
			h.priv = append(h.priv, o.handle)
		} else {
			h.pub = append(h.pub, o.handle)
		}
	}
	destroy := func(handles ...uint) {
		for _, h := range handles {
			acts = append(acts, action{handle: h, destroy: true})
		}
	}
	// discard destroys a pending key, private half first.
	discard := func(h *halves) {
		destroy(h.priv...)
		destroy(h.pub...)
		removed++
	}
	for _, id := range slices.Sorted(maps.Keys(ids)) {
		g := ids[id]
		tags := slices.Sorted(maps.Keys(g.pending))
		if len(g.main.priv) > 0 {
			// The ID has its key: every pending key is uncommitted.
			for _, tag := range tags {
				discard(g.pending[tag])
			}
			continue
		}
		// No private key under the label: a pending private key, if any, is
		// committed. One whose public half is already relabelled (step 4
		// done) comes first; the choice is deterministic, so that a repair
		// interrupted in its turn picks the same key again.
		winner := ""
		for _, tag := range slices.Backward(tags) {
			if h := g.pending[tag]; len(h.priv) > 0 && len(h.pub) == 0 {
				winner = tag
				break
			}
		}
		if winner == "" {
			for _, tag := range slices.Backward(tags) {
				if h := g.pending[tag]; len(h.priv) > 0 {
					winner = tag
					break
				}
			}
		}
		if winner == "" {
			// Nothing to commit. Pending public keys without their private
			// key are what an interrupted generation left. A public key
			// under the label itself (an interrupted DeleteKey) stays: it
			// may not be ours (the empty prefix spans the whole token), it
			// is harmless, and the ID's next GenerateKey removes it.
			for _, tag := range tags {
				discard(g.pending[tag])
			}
			continue
		}
		w := g.pending[winner]
		if len(w.pub) > 0 {
			// Steps 3 and 4: the old public key goes, the new one takes
			// the label.
			if len(g.main.pub) > 0 {
				destroy(g.main.pub...)
				removed++
			}
			for _, h := range w.pub {
				acts = append(acts, action{handle: h, relabel: id})
			}
		}
		for _, h := range w.priv { // step 5
			acts = append(acts, action{handle: h, relabel: id})
		}
		for _, tag := range tags {
			if tag != winner {
				discard(g.pending[tag])
			}
		}
	}
	return acts, removed
}
