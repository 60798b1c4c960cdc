// Package awskms is a key manager that keeps its keys in AWS KMS: the
// private keys are generated in KMS and never leave it, and every signature
// is one kms:Sign call.
//
// # Keys and aliases
//
// Each key ID is an alias under a prefix of the server's: the key of ID
// "x509-ca-A" is the one alias/plinth/example-org/server-1/x509-ca-A points
// to. A restarted server finds its keys again by those aliases:
//
//	km, err := awskms.New(ctx, awskms.Config{
//		Region:      "eu-west-1",
//		AliasPrefix: "alias/plinth/example-org/server-1/",
//		ServerID:    "server-1",
//	})
//	if err != nil {
//		return err // a bad prefix or no region; KMS is not called yet
//	}
//	key, err := km.GetKey(ctx, "x509-ca-A")
//	if errors.Is(err, hsm.ErrNotFound) {
//		key, err = km.GenerateKey(ctx, "x509-ca-A", hsm.ECP256)
//	}
//
// Credentials come from the standard AWS chain (environment, shared files,
// web identity, ECS, EC2 instance role) unless Config.Credentials is set,
// and Config.Endpoint points the client at a VPC endpoint.
//
// The key types map to KMS key specs: ec-p256 to ECC_NIST_P256 (ECDSA_SHA_256),
// ec-p384 to ECC_NIST_P384 (ECDSA_SHA_384), rsa-2048 and rsa-4096 to
// RSA_2048 and RSA_4096 (RSASSA_PKCS1_V1_5_SHA_*, or RSASSA_PSS_SHA_* when
// Sign's opts is an *rsa.PSSOptions). Sign sends the digest (MessageType
// DIGEST), never the message. A Key caches its public key and names its KMS
// key by ARN, so signing costs one call and nothing else.
//
// # No key is left behind
//
// Every key GenerateKey creates is tagged plinth:server=<ServerID> (and
// plinth:key-id=<id>) in the CreateKey call itself. GenerateKey then points
// the alias at the new key and schedules the deletion of the key the alias
// pointed to before, with KMS's shortest waiting period, 7 days, during
// which kms:CancelKeyDeletion recovers it. If a step after CreateKey fails,
// GenerateKey schedules the new key's deletion before it returns, even when
// its context is canceled, and leaves the alias as it was. It first looks at
// the alias, though: KMS may have moved it and lost the response, and the new
// key is then the one to keep.
//
// What the clean-up cannot handle (a crash, KMS unreachable, a lost
// CreateKey response that the SDK retried) Sweep does: the server calls it
// periodically, and it schedules the deletion of the keys tagged with its
// ServerID that no alias points to and that are older than
// Config.SweepGrace (an hour), which a GenerateKey in progress is not.
//
// DeleteKey, replacement and Sweep only ever delete keys tagged with the
// server's ServerID: a key an operator pointed an alias at is left alone.
//
// # Permissions
//
// The server's AWS identity needs kms:CreateKey and kms:TagResource (for
// the tags given to CreateKey), kms:CreateAlias, kms:UpdateAlias and
// kms:DeleteAlias (on the aliases and on the keys), kms:DescribeKey,
// kms:GetPublicKey, kms:Sign, kms:ScheduleKeyDeletion, kms:ListResourceTags,
// and kms:ListAliases and kms:ListKeys on "*". The tags allow a policy that
// confines the server to its own keys, with the condition
// aws:RequestTag/plinth:server on CreateKey and aws:ResourceTag/plinth:server
// on the rest; Sweep skips keys whose tags it may not read.
//
// # Errors
//
// Throttling and transient failures are retried by the SDK, up to
// Config.MaxAttempts (5) with a jittered exponential backoff capped at
// Config.MaxBackoff (2 s). An error names the KMS operation and what to
// check: the IAM and key policies when KMS denies a call, the request quota
// when it throttles every attempt, the credentials when AWS rejects them. A
// key that is pending deletion or deleted behind the server's back makes
// GetKey and Sign fail with an error wrapping hsm.ErrNotFound that says so;
// a disabled key is an error that says to enable it.
//
// # Costs
//
// Each Sign is an HTTPS request to KMS: milliseconds, not the microseconds
// of crypto/ecdsa, and subject to KMS's request quotas for asymmetric keys.
// That suits a CA signing SVIDs, not a hot path. Package kmstest is a fake
// KMS for tests.
package awskms
