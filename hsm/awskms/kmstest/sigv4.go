package kmstest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
)

// authenticate checks r's Signature Version 4 Authorization header against
// Credentials, Region and the service kms, as KMS would, and returns the
// error KMS gives when it does not hold.
func authenticate(r *http.Request, body []byte) *apiError {
	auth := r.Header.Get("Authorization")
	if auth == "" {
		return kmsErr("MissingAuthenticationTokenException", "Missing Authentication Token")
	}
	params, ok := strings.CutPrefix(auth, "AWS4-HMAC-SHA256 ")
	if !ok {
		return kmsErr("IncompleteSignatureException", "Authorization header requires the AWS4-HMAC-SHA256 algorithm")
	}
	var credential, signedHeaders, signature string
	for p := range strings.SplitSeq(params, ",") {
		name, value, _ := strings.Cut(strings.TrimSpace(p), "=")
		switch name {
		case "Credential":
			credential = value
		case "SignedHeaders":
			signedHeaders = value
		case "Signature":
			signature = value
		}
	}
	scope := strings.Split(credential, "/")
	if len(scope) != 5 || signedHeaders == "" || signature == "" || scope[4] != "aws4_request" {
		return kmsErr("IncompleteSignatureException", "Authorization header requires Credential, SignedHeaders and Signature")
	}
	if scope[0] != AccessKeyID {
		return kmsErr("UnrecognizedClientException", "The security token included in the request is invalid.")
	}
	if scope[2] != Region {
		return kmsErr("InvalidSignatureException", "Credential should be scoped to a valid region.")
	}
	if scope[3] != "kms" {
		return kmsErr("InvalidSignatureException", "Credential should be scoped to correct service: 'kms'.")
	}
	date := r.Header.Get("X-Amz-Date")
	if !strings.HasPrefix(date, scope[1]) {
		return kmsErr("InvalidSignatureException", "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP.")
	}

	var canonical strings.Builder
	path := r.URL.EscapedPath()
	if path == "" {
		path = "/"
	}
	canonical.WriteString(r.Method + "\n" + path + "\n" + r.URL.Query().Encode() + "\n")
	for h := range strings.SplitSeq(signedHeaders, ";") {
		var value string
		switch h {
		case "host":
			value = r.Host
		case "content-length":
			value = strconv.FormatInt(r.ContentLength, 10)
		default:
			vs := r.Header.Values(h)
			for i, v := range vs {
				vs[i] = strings.Join(strings.Fields(v), " ")
			}
			value = strings.Join(vs, ",")
		}
		canonical.WriteString(h + ":" + value + "\n")
	}
	canonical.WriteString("\n" + signedHeaders + "\n" + hexSHA256([]byte(body)))

	credScope := strings.Join(scope[1:], "/")
	toSign := "AWS4-HMAC-SHA256\n" + date + "\n" + credScope + "\n" + hexSHA256([]byte(canonical.String()))
	k := []byte("AWS4" + SecretAccessKey)
	for _, part := range scope[1:] {
		k = hmacSHA256(k, part)
	}
	want := hex.EncodeToString(hmacSHA256(k, toSign))
	if !hmac.Equal([]byte(want), []byte(signature)) {
		return kmsErr("InvalidSignatureException", "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.")
	}
	return nil
}

func hmacSHA256(key []byte, data string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(data))
	return h.Sum(nil)
}

func hexSHA256(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
