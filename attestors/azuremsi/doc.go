// Package azuremsi is the azure_msi node attestor, compatible with SPIRE's:
// an Azure VM proves who it is with an access token of its managed identity,
// which the Instance Metadata Service (IMDS) hands out and Microsoft Entra ID
// signs.
//
// The agent half asks IMDS for a token for the configured resource and
// sends it:
//
//	agent, err := azuremsi.NewAgent(azuremsi.AgentConfig{})  // 169.254.169.254, Resource Manager
//	payload, err := agent.Payload(ctx, nil)                    // {"v":1,"token":"eyJ…"}
//
// The server half verifies it with the keys of the tenant it names, which
// must be allowed, and names the agent after the tenant and the identity:
//
//	server, err := azuremsi.NewServer(azuremsi.ServerConfig{
//		TrustDomain: td,
//		Tenants:     map[string]azuremsi.TenantConfig{"<tenant ID>": {}},
//		Attested:    datastore.AgentExists,
//	})
//	res, err := server.Attest(ctx, payload, nil)
//	// res.AgentID: spiffe://<td>/spire/agent/azure_msi/<tenant ID>/<principal ID>
//
// # Selectors
//
//	azure_msi:tenant-id:<tenant ID>
//	azure_msi:principal-id:<principal (object) ID>
//	azure_msi:subscription-id:<subscription>    \
//	azure_msi:resource-group:<resource group>    | from xms_mirid, when it
//	azure_msi:virtual-machine:<VM name>          | names a VM (a system-
//	azure_msi:vm-name:<resource group>:<VM name> / assigned identity)
//
// A scale set's identity gives virtual-machine-scale-set:<name> instead of
// the two VM selectors. subscription-id and vm-name are SPIRE's, which SPIRE
// gets from the Azure API; the network selectors SPIRE also gets that way are
// not produced. A user-assigned identity's xms_mirid names the identity, not
// the VM (one identity can sit on many VMs), so it gives no VM selectors.
//
// # What is checked, and what is trusted
//
// The token's tid chooses the tenant; it must be one of ServerConfig.Tenants,
// and the key that verifies the RS256 signature, found by the token's key
// ID, must be one of that tenant's keys. Keys never come from the token: its
// jwk, jku, x5c and x5t headers are ignored. Any other algorithm (none,
// HS256, RS512, …) is refused before a key is looked up. Reading tid before
// the signature is verified is safe: it only selects whose keys are tried,
// and a token whose tid was changed no longer verifies. Then: the issuer is
// that tenant's (https://sts.windows.net/<tid>/ for v1 tokens, or
// https://login.microsoftonline.com/<tid>/v2.0); the audience is exactly the
// tenant's resource (ServerConfig.Resource unless the tenant has its own);
// exp is present and, with a minute of leeway, the token has not expired and
// is not before its nbf or iat; it has a principal (sub, else oid). A
// rejection wraps attestors.ErrRejected and says which check failed.
//
// Caveat: any principal of an allowed tenant that can get a token for the
// resource can attest, not only VMs: a service principal, and, with the
// default resource (Resource Manager), a user through `az account
// get-access-token`. Two checks refuse user tokens (sub differs from oid;
// idtyp other than app), but an application's token passes. Use a resource
// only your VMs' identities can get tokens for (an app registration with
// assignment required), as SPIRE's documentation advises, and register
// entries by the xms_mirid selectors, which only managed identities carry.
//
// By default a tenant's keys are downloaded from KeysURL(tenant) and cached
// (HTTPKeys): for the response's Cache-Control max-age (1 h without one), and
// downloaded again, at most once a minute, when a token names a key ID the
// cache lacks. A tenant can have its keys configured instead (ParseJWKS, a
// JWKS file) or another URL (TenantConfig.KeysURL); the simulator's fake
// IMDS signs with a test key a server trusts only this way.
//
// Replay is refused the way SPIRE refuses it: a principal that has already
// attested cannot attest again unless AllowReattestation is set. The token
// is a bearer credential, valid for about a day; with re-attestation
// allowed, a leaked token re-attests as its principal until it expires.
//
// The server also accepts SPIRE's agent payload ({"token": …}), so SPIRE
// agents attest unchanged.
package azuremsi
