// Package ca is the certificate authority of one trust domain: it signs
// X509-SVIDs and JWT-SVIDs with keys held through the hsm contract, and keeps
// the trust bundle those keys belong to.
//
// Each kind of authority (X.509 and JWT) has two slots, A and B. At start the
// CA loads its journal (slot states, certificates, public keys) from the
// datastore, or creates a first authority in slot A. Run rotates: half way
// through the active authority's life the other slot is prepared and
// published in the bundle; at five sixths it becomes active and the old
// authority stays in the bundle until it expires, so verifiers always know
// every key that has signed a live SVID. SVID lifetimes are capped at the
// signing authority's expiry.
//
//	c, err := ca.New(ctx, ca.Config{TrustDomain: td, Keys: keys, Journal: store, ...})
//	go c.Run(ctx)
//	chain, err := c.SignX509SVID(ctx, ca.X509Params{ID: id, PublicKey: pub})
package ca
