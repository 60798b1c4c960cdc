package kmstest_test

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/plinth-id/plinth/hsm/awskms/kmstest"
)

func client(t *testing.T, s *kmstest.Server) *kms.Client {
	t.Helper()
	cfg, err := config.LoadDefaultConfig(t.Context(),
		config.WithRegion(kmstest.Region),
		config.WithCredentialsProvider(kmstest.Credentials()))
	if err != nil {
		t.Fatal(err)
	}
	return kms.NewFromConfig(cfg, func(o *kms.Options) {
		o.BaseEndpoint = aws.String(s.URL)
		o.Retryer = retry.NewStandard(func(o *retry.StandardOptions) {
			o.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return 0, nil })
		})
	})
}

// TestWire checks the fake's answers on the wire, without the SDK.
func TestWire(t *testing.T) {
	s := kmstest.New()
	defer s.Close()
	tests := []struct {
		name, target, contentType, auth string
		wantType                        string
		sign                            bool // with the SDK's signer, as a client would
	}{
		{"unsigned", "TrentService.ListKeys", "application/x-amz-json-1.1", "", "MissingAuthenticationTokenException", false},
		{"bad signature", "TrentService.ListKeys", "application/x-amz-json-1.1",
			"AWS4-HMAC-SHA256 Credential=" + kmstest.AccessKeyID + "/20260101/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=00", "InvalidSignatureException", false},
		{"unknown key", "TrentService.ListKeys", "application/x-amz-json-1.1",
			"AWS4-HMAC-SHA256 Credential=AKIAUNKNOWN/20260101/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=00", "UnrecognizedClientException", false},
		{"other region", "TrentService.ListKeys", "application/x-amz-json-1.1",
			"AWS4-HMAC-SHA256 Credential=" + kmstest.AccessKeyID + "/20260101/eu-west-1/kms/aws4_request, SignedHeaders=host, Signature=00", "InvalidSignatureException", false},
		{"unknown operation", "TrentService.Frobnicate", "application/x-amz-json-1.1", "", "UnknownOperationException", true},
		{"no target", "", "application/x-amz-json-1.1", "", "UnknownOperationException", true},
		{"JSON 1.0", "TrentService.ListKeys", "application/x-amz-json-1.0", "", "SerializationException", true},
		{"bad limit", "TrentService.ListKeys", "application/x-amz-json-1.1", "", "ValidationException", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := `{"Limit":0}`
			req, err := http.NewRequest(http.MethodPost, s.URL+"/", strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("X-Amz-Target", tt.target)
			req.Header.Set("Content-Type", tt.contentType)
			req.Header.Set("X-Amz-Date", "20260101T000000Z")
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			if tt.sign {
				creds, _ := kmstest.Credentials().Retrieve(t.Context())
				hash := sha256.Sum256([]byte(body))
				if err := v4.NewSigner().SignHTTP(t.Context(), creds, req, hex.EncodeToString(hash[:]), "kms", kmstest.Region, time.Now()); err != nil {
					t.Fatal(err)
				}
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			respBody, _ := io.ReadAll(resp.Body)
			var e struct {
				Type    string `json:"__type"`
				Message *string
			}
			if err := json.Unmarshal(respBody, &e); err != nil {
				t.Fatalf("body %q: %v", respBody, err)
			}
			if resp.StatusCode != http.StatusBadRequest || e.Type != tt.wantType || e.Message == nil ||
				resp.Header.Get("Content-Type") != "application/x-amz-json-1.1" || resp.Header.Get("X-Amzn-Requestid") == "" {
				t.Errorf("got %d %v %s, want 400 with __type %s, a message, KMS's content type and a request ID", resp.StatusCode, resp.Header, respBody, tt.wantType)
			}
		})
	}
}

func TestOperations(t *testing.T) {
	ctx := t.Context()
	s := kmstest.New()
	defer s.Close()
	c := client(t, s)

	out, err := c.CreateKey(ctx, &kms.CreateKeyInput{
		KeySpec: types.KeySpecEccNistP256, KeyUsage: types.KeyUsageTypeSignVerify,
		Tags: []types.Tag{{TagKey: aws.String("team"), TagValue: aws.String("identity")}},
	})
	if err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	md := out.KeyMetadata
	if md.KeyState != types.KeyStateEnabled || md.Origin != types.OriginTypeAwsKms || md.CreationDate == nil ||
		!strings.HasPrefix(aws.ToString(md.Arn), "arn:aws:kms:us-east-1:111122223333:key/") {
		t.Errorf("CreateKey: unexpected metadata %+v", md)
	}
	if _, err := c.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/test"), TargetKeyId: md.KeyId}); err != nil {
		t.Fatalf("CreateAlias: %v", err)
	}
	var exists *types.AlreadyExistsException
	if _, err := c.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/test"), TargetKeyId: md.KeyId}); !errors.As(err, &exists) {
		t.Errorf("CreateAlias of an existing alias: got %v, want an AlreadyExistsException", err)
	}
	var notFound *types.NotFoundException
	if _, err := c.UpdateAlias(ctx, &kms.UpdateAliasInput{AliasName: aws.String("alias/none"), TargetKeyId: md.KeyId}); !errors.As(err, &notFound) {
		t.Errorf("UpdateAlias of a missing alias: got %v, want a NotFoundException", err)
	}
	if _, err := c.ListResourceTags(ctx, &kms.ListResourceTagsInput{KeyId: aws.String("alias/test")}); !errors.As(err, &notFound) {
		t.Errorf("ListResourceTags of an alias: got %v, want a NotFoundException", err)
	}
	tags, err := c.ListResourceTags(ctx, &kms.ListResourceTagsInput{KeyId: md.Arn})
	if err != nil || len(tags.Tags) != 1 || aws.ToString(tags.Tags[0].TagValue) != "identity" {
		t.Errorf("ListResourceTags: got %+v, %v", tags, err)
	}

	// Sign, RAW and DIGEST, through the alias.
	pk, err := c.GetPublicKey(ctx, &kms.GetPublicKeyInput{KeyId: aws.String("alias/test")})
	if err != nil {
		t.Fatalf("GetPublicKey: %v", err)
	}
	pub, err := x509.ParsePKIXPublicKey(pk.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("message"))
	for _, mt := range []types.MessageType{types.MessageTypeRaw, types.MessageTypeDigest} {
		msg := []byte("message")
		if mt == types.MessageTypeDigest {
			msg = digest[:]
		}
		sig, err := c.Sign(ctx, &kms.SignInput{KeyId: aws.String("alias/test"), Message: msg, MessageType: mt, SigningAlgorithm: types.SigningAlgorithmSpecEcdsaSha256})
		if err != nil {
			t.Fatalf("Sign %s: %v", mt, err)
		}
		if !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), digest[:], sig.Signature) {
			t.Errorf("Sign %s: the signature does not verify", mt)
		}
	}
	var usage *types.InvalidKeyUsageException
	if _, err := c.Sign(ctx, &kms.SignInput{KeyId: md.KeyId, Message: digest[:], MessageType: types.MessageTypeDigest, SigningAlgorithm: types.SigningAlgorithmSpecEcdsaSha384}); !errors.As(err, &usage) {
		t.Errorf("Sign with ECDSA_SHA_384 on P-256: got %v, want an InvalidKeyUsageException", err)
	}

	// Deletion: the window is checked, the key's state changes.
	if _, err := c.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: md.KeyId, PendingWindowInDays: aws.Int32(6)}); err == nil || !strings.Contains(err.Error(), "ValidationException") {
		t.Errorf("ScheduleKeyDeletion in 6 days: got %v, want a ValidationException", err)
	}
	del, err := c.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: md.KeyId, PendingWindowInDays: aws.Int32(7)})
	if err != nil || del.KeyState != types.KeyStatePendingDeletion || del.DeletionDate == nil {
		t.Fatalf("ScheduleKeyDeletion: got %+v, %v", del, err)
	}
	var invalid *types.KMSInvalidStateException
	if _, err := c.Sign(ctx, &kms.SignInput{KeyId: md.KeyId, Message: digest[:], MessageType: types.MessageTypeDigest, SigningAlgorithm: types.SigningAlgorithmSpecEcdsaSha256}); !errors.As(err, &invalid) {
		t.Errorf("Sign with a key pending deletion: got %v, want a KMSInvalidStateException", err)
	}
	if _, err := c.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: md.KeyId}); !errors.As(err, &invalid) {
		t.Errorf("ScheduleKeyDeletion of a key pending deletion: got %v, want a KMSInvalidStateException", err)
	}
	var unsupported *types.UnsupportedOperationException
	if _, err := c.CreateKey(ctx, &kms.CreateKeyInput{}); !errors.As(err, &unsupported) {
		t.Errorf("CreateKey of a symmetric key: got %v, want an UnsupportedOperationException", err)
	}
}

func TestPagination(t *testing.T) {
	s := kmstest.New()
	defer s.Close()
	c := client(t, s)
	for range 25 {
		k, err := s.AddKey("ECC_NIST_P256", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.SetAlias("alias/k/"+k.ID, k.ID); err != nil {
			t.Fatal(err)
		}
	}
	var keys, aliases int
	kp := kms.NewListKeysPaginator(c, &kms.ListKeysInput{Limit: aws.Int32(1000)})
	for kp.HasMorePages() {
		out, err := kp.NextPage(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		keys += len(out.Keys)
	}
	ap := kms.NewListAliasesPaginator(c, &kms.ListAliasesInput{})
	for ap.HasMorePages() {
		out, err := ap.NextPage(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		aliases += len(out.Aliases)
	}
	if keys != 25 || aliases != 25 || s.Calls("ListKeys") != 3 || s.Calls("ListAliases") != 3 {
		t.Errorf("got %d keys in %d calls, %d aliases in %d calls; want 25 of each in 3 calls", keys, s.Calls("ListKeys"), aliases, s.Calls("ListAliases"))
	}
	var marker *types.InvalidMarkerException
	if _, err := c.ListKeys(t.Context(), &kms.ListKeysInput{Marker: aws.String("bogus")}); !errors.As(err, &marker) {
		t.Errorf("ListKeys with a bad marker: got %v, want an InvalidMarkerException", err)
	}
}

func TestFaults(t *testing.T) {
	ctx := t.Context()
	s := kmstest.New()
	defer s.Close()
	c := client(t, s) // 3 attempts
	k, err := s.AddKey("ECC_NIST_P256", "", nil)
	if err != nil {
		t.Fatal(err)
	}

	s.Throttle("DescribeKey", 2)
	if _, err := c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(k.ID)}); err != nil || s.Calls("DescribeKey") != 3 {
		t.Errorf("DescribeKey throttled twice: got %v after %d calls; want success after 3", err, s.Calls("DescribeKey"))
	}

	s.Inject(kmstest.Fault{Op: "CreateAlias", Err: "KMSInternalException", Times: 1, After: true})
	_, err = c.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/after"), TargetKeyId: aws.String(k.ID)})
	var exists *types.AlreadyExistsException
	if !errors.As(err, &exists) {
		t.Errorf("CreateAlias whose first response was lost: got %v, want the retry's AlreadyExistsException", err)
	}
	if s.Aliases()["alias/after"] != k.ID {
		t.Errorf("CreateAlias whose response was lost did not create the alias")
	}

	s.Inject(kmstest.Fault{Op: "GetPublicKey", Err: "AccessDeniedException", Skip: 1, Times: 1})
	for i, wantErr := range []bool{false, true, false} {
		_, err := c.GetPublicKey(ctx, &kms.GetPublicKeyInput{KeyId: aws.String(k.ID)})
		if (err != nil) != wantErr {
			t.Errorf("GetPublicKey %d: got %v, want an error: %t", i, err, wantErr)
		}
	}

	if err := s.DeleteKey(k.ID); err != nil {
		t.Fatal(err)
	}
	var notFound *types.NotFoundException
	if _, err := c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String("alias/after")}); !errors.As(err, &notFound) {
		t.Errorf("DescribeKey of the alias of a deleted key: got %v, want a NotFoundException", err)
	}
}
