package awsiid

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

// AWSConfig configures the AWS API clients of the EC2 lookup.
type AWSConfig struct {
	// AccessKeyID and SecretAccessKey are static credentials (SPIRE's
	// access_key_id and secret_access_key). Empty: the SDK's standard chain
	// (environment, shared files, web identity, container and instance roles).
	AccessKeyID     string
	SecretAccessKey string
	// AssumeRole is the name of a role to assume in the account of each
	// document (SPIRE's assume_role): arn:<partition>:iam::<account>:role/<name>.
	AssumeRole string
	// Partition of the assumed role's ARN; default "aws".
	Partition string
	// EC2Endpoint, IAMEndpoint and STSEndpoint override the service
	// endpoints (a VPC endpoint, a test server). Empty: AWS's.
	EC2Endpoint string
	IAMEndpoint string
	STSEndpoint string
	// HTTPClient carries the API calls; nil is the SDK's default.
	HTTPClient aws.HTTPClient
}

// AWSClients creates and caches EC2 and IAM clients per account and region.
// Its EC2 and IAM methods fit ServerConfig.EC2 and ServerConfig.IAM. It is
// safe for concurrent use.
type AWSClients struct {
	c    AWSConfig
	base aws.Config

	mu    sync.Mutex
	creds map[string]aws.CredentialsProvider // by account, with AssumeRole
	ec2   map[string]*ec2.Client             // by account@region
}

// NewAWSClients loads the SDK configuration (credentials are resolved on
// first use, not here).
func NewAWSClients(ctx context.Context, c AWSConfig) (*AWSClients, error) {
	if (c.AccessKeyID == "") != (c.SecretAccessKey == "") {
		return nil, errors.New("awsiid: set both the access key ID and the secret access key, or neither")
	}
	if c.Partition == "" {
		c.Partition = "aws"
	}
	for _, e := range []string{c.EC2Endpoint, c.IAMEndpoint, c.STSEndpoint} {
		if e == "" {
			continue
		}
		if u, err := url.Parse(e); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, fmt.Errorf("awsiid: endpoint %q is not an http(s) URL", e)
		}
	}
	var opts []func(*config.LoadOptions) error
	if c.AccessKeyID != "" {
		opts = append(opts, config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, "")))
	}
	if c.HTTPClient != nil {
		opts = append(opts, config.WithHTTPClient(c.HTTPClient))
	}
	base, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("awsiid: load AWS configuration: %w", err)
	}
	return &AWSClients{c: c, base: base, creds: map[string]aws.CredentialsProvider{}, ec2: map[string]*ec2.Client{}}, nil
}

// credsFor returns the credentials for calls about account: the base
// ones, or the assumed role in that account. Call with a.mu held.
func (a *AWSClients) credsFor(region, account string) aws.CredentialsProvider {
	if a.c.AssumeRole == "" {
		return a.base.Credentials
	}
	if p, ok := a.creds[account]; ok {
		return p
	}
	stsCfg := a.base.Copy()
	stsCfg.Region = region
	arn := fmt.Sprintf("arn:%s:iam::%s:role/%s", a.c.Partition, account, a.c.AssumeRole)
	client := sts.NewFromConfig(stsCfg, func(o *sts.Options) {
		if a.c.STSEndpoint != "" {
			o.BaseEndpoint = aws.String(a.c.STSEndpoint)
		}
	})
	p := aws.NewCredentialsCache(stscreds.NewAssumeRoleProvider(client, arn, func(o *stscreds.AssumeRoleOptions) {
		o.RoleSessionName = "plinth-aws-iid"
	}))
	a.creds[account] = p
	return p
}

// EC2 returns the EC2 client for region, acting in account.
func (a *AWSClients) EC2(_ context.Context, region, account string) (EC2API, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	key := account + "@" + region
	if c, ok := a.ec2[key]; ok {
		return c, nil
	}
	cfg := a.base.Copy()
	cfg.Region = region
	cfg.Credentials = a.credsFor(region, account)
	c := ec2.NewFromConfig(cfg, func(o *ec2.Options) {
		if a.c.EC2Endpoint != "" {
			o.BaseEndpoint = aws.String(a.c.EC2Endpoint)
		}
	})
	a.ec2[key] = c
	return c, nil
}

// IAM returns the IAM client acting in account.
func (a *AWSClients) IAM(_ context.Context, account string) (IAMAPI, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	hc := a.base.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	return &iamClient{
		http:     hc,
		creds:    a.credsFor(partitionRegion(a.c.Partition), account),
		endpoint: a.c.IAMEndpoint,
		signer:   v4.NewSigner(),
	}, nil
}

// iamClient calls IAM's GetInstanceProfile over IAM's query protocol, signed
// with SigV4. It is hand-written because the IAM service client of the SDK
// is not a dependency of Plinth; it does this one call.
type iamClient struct {
	http     aws.HTTPClient
	creds    aws.CredentialsProvider
	endpoint string // override; "" picks the partition's global endpoint
	signer   *v4.Signer
}

// iamEndpoints are IAM's global endpoints and signing regions by partition.
var iamEndpoints = map[string][2]string{
	"aws":        {"https://iam.amazonaws.com", "us-east-1"},
	"aws-cn":     {"https://iam.cn-north-1.amazonaws.com.cn", "cn-north-1"},
	"aws-us-gov": {"https://iam.us-gov.amazonaws.com", "us-gov-west-1"},
}

func partitionRegion(p string) string {
	if e, ok := iamEndpoints[p]; ok {
		return e[1]
	}
	return "us-east-1"
}

// getInstanceProfileResponse is the part of the GetInstanceProfile response
// read here.
type getInstanceProfileResponse struct {
	Roles []string `xml:"GetInstanceProfileResult>InstanceProfile>Roles>member>Arn"`
}

type iamErrorResponse struct {
	Code    string `xml:"Error>Code"`
	Message string `xml:"Error>Message"`
}

// InstanceProfileRoles returns the ARNs of the roles in the instance profile.
func (c *iamClient) InstanceProfileRoles(ctx context.Context, arn string) ([]string, error) {
	partition, name, err := profileName(arn)
	if err != nil {
		return nil, err
	}
	ep, ok := iamEndpoints[partition]
	if !ok {
		return nil, fmt.Errorf("IAM: unknown partition %q in %s", partition, arn)
	}
	if c.endpoint != "" {
		ep[0] = c.endpoint
	}
	body := url.Values{
		"Action":              {"GetInstanceProfile"},
		"Version":             {"2010-05-08"},
		"InstanceProfileName": {name},
	}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(ep[0], "/")+"/", strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	creds, err := c.creds.Retrieve(ctx)
	if err != nil {
		return nil, fmt.Errorf("IAM GetInstanceProfile %s: credentials: %w", name, err)
	}
	sum := sha256.Sum256([]byte(body))
	if err := c.signer.SignHTTP(ctx, creds, req, hex.EncodeToString(sum[:]), "iam", ep[1], time.Now()); err != nil {
		return nil, fmt.Errorf("IAM GetInstanceProfile %s: sign: %w", name, err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("IAM GetInstanceProfile %s: %w", name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("IAM GetInstanceProfile %s: %w", name, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e iamErrorResponse
		if xml.Unmarshal(b, &e) == nil && e.Code != "" {
			return nil, fmt.Errorf("IAM GetInstanceProfile %s: %s: %s", name, e.Code, e.Message)
		}
		return nil, fmt.Errorf("IAM GetInstanceProfile %s: HTTP %s", name, resp.Status)
	}
	var out getInstanceProfileResponse
	if err := xml.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("IAM GetInstanceProfile %s: malformed response: %v", name, err)
	}
	return out.Roles, nil
}
