package awskms

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/smithy-go"

	"github.com/plinth-id/plinth/hsm"
)

// errorCode returns the code of the KMS error in err's chain, such as
// "NotFoundException", or "".
func errorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// credentialErrors are the codes with which AWS rejects a request's
// credentials or signature.
var credentialErrors = map[string]bool{
	"UnrecognizedClientException":         true,
	"InvalidSignatureException":           true,
	"IncompleteSignatureException":        true,
	"MissingAuthenticationTokenException": true,
	"ExpiredTokenException":               true,
	"InvalidClientTokenId":                true,
}

// opError wraps err, from the KMS operation op on the key or alias on (if
// not empty), saying what to check when an operator can fix it. A
// NotFoundException wraps hsm.ErrNotFound too.
func opError(op, on string, err error) error {
	msg := "kms:" + op
	if on != "" {
		msg += " on " + on
	}
	var (
		maxAttempts *retry.MaxAttemptsError
		quota       ratelimit.QuotaExceededError
	)
	switch code := errorCode(err); {
	case code == "AccessDeniedException":
		msg += fmt.Sprintf(" denied: allow kms:%s to this server's AWS identity, in its IAM policy and in the key policy", op)
	case errors.As(err, &quota):
		msg += " failed and was not retried: too many calls failed lately, and the client tries calls once until some succeed again"
	case isThrottle(code):
		msg += " throttled by KMS"
		if errors.As(err, &maxAttempts) {
			msg += fmt.Sprintf(" on all %d attempts", maxAttempts.Attempt)
		}
		msg += ": raise the account's KMS request quota, or make fewer calls"
	case code == "LimitExceededException":
		msg += ": a KMS quota on keys or aliases is reached in this account and region: look for leaked keys (Sweep deletes Plinth's) or raise the quota"
	case credentialErrors[code]:
		msg += ": AWS rejected the credentials: check those this server finds (AWS_PROFILE, AWS_ACCESS_KEY_ID, its role) and that they are for this region"
	case code == "DisabledException":
		msg += ": the KMS key is disabled: enable it with kms:EnableKey"
	case code == "NotFoundException":
		return fmt.Errorf("%s: the KMS key is gone (deleted outside this server?): %w: %w", msg, hsm.ErrNotFound, err)
	}
	return fmt.Errorf("%s: %w", msg, err)
}

func isThrottle(code string) bool {
	_, ok := retry.DefaultThrottleErrorCodes[code]
	return ok && code != "LimitExceededException"
}

// backoffBase is the longest wait before the first retry; it doubles with
// every attempt, up to MaxBackoff.
const backoffBase = 200 * time.Millisecond

// newRetryer returns the SDK's standard retryer with maxAttempts attempts
// and a full-jitter exponential backoff capped at maxBackoff. It does not
// retry LimitExceededException, which the SDK counts as throttling but KMS
// uses for quotas on resources (keys or aliases in an account), where
// waiting does not help.
func newRetryer(maxAttempts int, maxBackoff time.Duration) aws.Retryer {
	return retry.NewStandard(func(o *retry.StandardOptions) {
		o.MaxAttempts = maxAttempts
		o.MaxBackoff = maxBackoff
		o.Backoff = retry.BackoffDelayerFunc(func(attempt int, _ error) (time.Duration, error) {
			ceiling := maxBackoff
			if n := max(attempt-1, 0); n < 20 {
				ceiling = min(maxBackoff, backoffBase<<n)
			}
			return rand.N(ceiling + 1), nil
		})
		throttles := maps.Clone(retry.DefaultThrottleErrorCodes)
		delete(throttles, "LimitExceededException")
		for i, r := range o.Retryables {
			if c, ok := r.(retry.RetryableErrorCode); ok {
				if _, ok := c.Codes["LimitExceededException"]; ok {
					o.Retryables[i] = retry.RetryableErrorCode{Codes: throttles}
				}
			}
		}
		o.Throttles = []retry.IsErrorThrottle{retry.ThrottleErrorCode{Codes: throttles}}
	})
}
