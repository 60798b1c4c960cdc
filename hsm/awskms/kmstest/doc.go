// Package kmstest is a fake AWS KMS for tests: an httptest.Server that speaks
// KMS's awsJson1_1 protocol, so that the real aws-sdk-go-v2 client can be
// tested without AWS and without an emulator.
//
// Start one, point a KMS client at its URL and give it the fake's
// credentials:
//
//	s := kmstest.New()
//	defer s.Close()
//	cfg, err := config.LoadDefaultConfig(ctx,
//		config.WithRegion(kmstest.Region),
//		config.WithCredentialsProvider(kmstest.Credentials()))
//	client := kms.NewFromConfig(cfg, func(o *kms.Options) { o.BaseEndpoint = aws.String(s.URL) })
//
// # What it implements
//
// The operations a signing key manager uses, with KMS's request and
// response shapes: CreateKey, DescribeKey, GetPublicKey, Sign,
// ScheduleKeyDeletion, CreateAlias, UpdateAlias, DeleteAlias, ListAliases,
// ListKeys and ListResourceTags. A request must be a POST with
// `X-Amz-Target: TrentService.<Op>` and `Content-Type:
// application/x-amz-json-1.1`, signed with Signature Version 4 by
// Credentials for Region and service kms; the fake checks the signature.
// Blobs are base64 and times are epoch seconds, as on the wire. Errors are
// KMS's: `{"__type":"NotFoundException","message":"..."}` with status 400
// (500 or 503 for KMSInternalException, KeyUnavailableException and
// DependencyTimeoutException).
//
// Keys are real: CreateKey generates an ECDSA (ECC_NIST_P256, _P384, _P521)
// or RSA (RSA_2048, _3072, _4096) key for SIGN_VERIFY, and Sign really signs,
// with MessageType DIGEST or RAW. Keys are Enabled, Disabled or
// PendingDeletion, and the operations check the state as KMS does: Sign on a
// key pending deletion is a KMSInvalidStateException, on a disabled key a
// DisabledException. Symmetric, HMAC and imported keys are not implemented
// and are refused with an UnsupportedOperationException that says so.
//
// List operations return at most 10 items a page, fewer than a larger Limit
// asks for, as KMS is allowed to: a client's pagination is exercised by a
// handful of keys.
//
// # Faults and changes behind the client's back
//
// Inject makes calls fail, before they take effect or after (the call is
// carried out and its response lost); Fail and Throttle are shorthands:
//
//	s.Throttle("Sign", 3)                            // three ThrottlingExceptions, then success
//	s.Fail("UpdateAlias", "AccessDeniedException", 1) // the next UpdateAlias is denied
//	s.Inject(kmstest.Fault{Op: "UpdateAlias", Err: "KMSInternalException", Times: -1, After: true})
//
// DeleteKey, SetKeyState, AddKey and SetAlias change the fake's state as an
// operator with the AWS console would; Keys, Key, Aliases and Calls let a
// test see what the client did.
package kmstest
