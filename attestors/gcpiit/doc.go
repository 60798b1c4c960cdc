// Package gcpiit is the gcp_iit node attestor, compatible with SPIRE's: a
// Compute Engine VM proves which instance it is with the instance identity
// token its metadata server hands out, a JWT signed by Google.
//
// The agent half asks the metadata server for a token with the configured
// audience, in full format (with the instance's claims), and sends it:
//
//	agent, err := gcpiit.NewAgent(gcpiit.AgentConfig{})  // metadata.google.internal, SPIRE's audience
//	payload, err := agent.Payload(ctx, nil)                // {"v":1,"token":"eyJ…"}
//
// The server half verifies it and names the agent after the instance:
//
//	server, err := gcpiit.NewServer(gcpiit.ServerConfig{
//		TrustDomain: td,
//		ProjectIDs:  []string{"my-project"},
//		Attested:    datastore.AgentExists,
//	})
//	res, err := server.Attest(ctx, payload, nil)
//	// res.AgentID: spiffe://<td>/spire/agent/gcp_iit/my-project/4528923497298347234
//
// # Selectors
//
//	gcp_iit:project-id:<project ID>
//	gcp_iit:project-number:<project number>
//	gcp_iit:zone:<zone>
//	gcp_iit:instance-id:<instance ID>
//	gcp_iit:instance-name:<instance name>
//	gcp_iit:sa:<service account email>   when the token has a verified email
//
// project-id, zone and instance-name are SPIRE's. SPIRE's tag, label,
// metadata and (all) sa selectors come from the Compute Engine API, which
// this package does not call.
//
// # What is checked, and what is trusted
//
// Nothing in the token is believed before its RS256 signature verifies with
// a key from ServerConfig.Keys, found by the token's key ID. Keys never come
// from the token: its jwk, jku and x5c headers are ignored. Every other
// algorithm (none, HS256 — the public key used as an HMAC secret —, PS256,
// ES256) is refused before any key is looked up. Then: the issuer is
// https://accounts.google.com; the audience is exactly the configured one;
// exp and iat are present and, with a minute of leeway, the token has not
// expired and is not from the future (nor before its nbf); it is no older
// than MaxAge when set; the google.compute_engine claims are all there; the
// project is allowed. A rejection wraps attestors.ErrRejected and says which
// check failed.
//
// By default the keys are Google's, downloaded from GoogleKeysURL and cached
// (HTTPKeys): for the response's Cache-Control max-age (1 h without one), and
// downloaded again, at most once a minute, when a token names a key ID the
// cache lacks, since Google publishes a key before signing with it. If
// Google cannot be reached the cached keys serve for up to a day past their
// expiry. A closed network, or a test, configures its own keys instead:
// ParseJWKS for a JWKS file, NewHTTPKeys for another URL, KeySources to use
// several. The simulator's fake metadata server signs with a test key that a
// server trusts only this way.
//
// Caveat: the token is a bearer credential. Whoever holds it (anything on
// the VM that can reach the metadata server, or anyone it leaks to within
// its hour) can present it. Replay is refused the way SPIRE refuses it: an
// instance that has already attested cannot attest again unless
// AllowReattestation is set. With it set, a leaked token is good for
// re-attesting as that instance until it expires; keep MaxAge short if that
// matters. Leaving ProjectIDs empty lets every VM on GCP attest.
//
// The server also accepts the bare token that SPIRE's agent sends, so SPIRE
// agents attest unchanged.
package gcpiit
