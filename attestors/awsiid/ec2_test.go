package awsiid

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plinth-id/plinth/attestors"
	"github.com/plinth-id/plinth/simulator"
)

// fakeInstance is what the fake EC2 knows about an instance.
type fakeInstance struct {
	owner          string
	state          string // running, stopped, …
	rootDeviceType string // ebs or instance-store
	rootAttach     time.Time
	eniAttach      time.Time
	eniIndex       int
}

// fakeAWS speaks just enough of EC2's and IAM's query protocols (form-encoded
// POST, XML responses, as the services do) and STS's AssumeRole for the SDK
// and the IAM client to work against it.
type fakeAWS struct {
	t         *testing.T
	instances map[string]fakeInstance
	mu        sync.Mutex
	calls     []string // "Action key=credential"
}

func (f *fakeAWS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	auth := r.Header.Get("Authorization")
	if !strings.HasPrefix(auth, "AWS4-HMAC-SHA256 Credential=") {
		http.Error(w, "unsigned request", 403)
		return
	}
	cred, _, _ := strings.Cut(strings.TrimPrefix(auth, "AWS4-HMAC-SHA256 Credential="), ",")
	parts := strings.Split(cred, "/") // key/date/region/service/aws4_request
	action := r.PostForm.Get("Action")
	f.mu.Lock()
	f.calls = append(f.calls, fmt.Sprintf("%s %s/%s/%s token=%q", action, parts[0], parts[2], parts[3], r.Header.Get("X-Amz-Security-Token")))
	f.mu.Unlock()
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")

	switch action {
	case "AssumeRole":
		if got := r.PostForm.Get("RoleArn"); got != "arn:aws:iam::123456789012:role/plinth-reader" {
			f.t.Errorf("AssumeRole RoleArn = %s", got)
		}
		fmt.Fprint(w, `<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <Credentials>
      <AccessKeyId>ASIAASSUMEDROLE</AccessKeyId>
      <SecretAccessKey>assumed-secret</SecretAccessKey>
      <SessionToken>assumed-session-token</SessionToken>
      <Expiration>2099-01-01T00:00:00Z</Expiration>
    </Credentials>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/plinth-reader/plinth-aws-iid</Arn>
      <AssumedRoleId>AROAEXAMPLE:plinth-aws-iid</AssumedRoleId>
    </AssumedRoleUser>
  </AssumeRoleResult>
  <ResponseMetadata><RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ResponseMetadata>
</AssumeRoleResponse>`)
	case "GetInstanceProfile":
		if r.PostForm.Get("Version") != "2010-05-08" || r.PostForm.Get("InstanceProfileName") != "web-profile" {
			w.WriteHeader(404)
			fmt.Fprint(w, `<ErrorResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><Error><Type>Sender</Type><Code>NoSuchEntity</Code><Message>Instance Profile nope cannot be found.</Message></Error><RequestId>x</RequestId></ErrorResponse>`)
			return
		}
		fmt.Fprint(w, `<GetInstanceProfileResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/">
  <GetInstanceProfileResult>
    <InstanceProfile>
      <InstanceProfileId>AIPAD5ARO2C5EXAMPLE3G</InstanceProfileId>
      <Roles>
        <member>
          <Path>/application/</Path>
          <Arn>arn:aws:iam::123456789012:role/application/web-role</Arn>
          <RoleName>web-role</RoleName>
          <AssumeRolePolicyDocument>%7B%7D</AssumeRolePolicyDocument>
          <CreateDate>2024-01-01T00:00:00Z</CreateDate>
          <RoleId>AROAEXAMPLE</RoleId>
        </member>
      </Roles>
      <InstanceProfileName>web-profile</InstanceProfileName>
      <Path>/application/</Path>
      <Arn>arn:aws:iam::123456789012:instance-profile/application/web-profile</Arn>
      <CreateDate>2024-01-01T00:00:00Z</CreateDate>
    </InstanceProfile>
  </GetInstanceProfileResult>
  <ResponseMetadata><RequestId>37289fda-b1d3-11e0-a1b7-d7e1a0bd6df5</RequestId></ResponseMetadata>
</GetInstanceProfileResponse>`)
	case "DescribeInstances":
		f.describe(w, r)
	default:
		http.Error(w, "unexpected action "+action, 400)
	}
}

func (f *fakeAWS) describe(w http.ResponseWriter, r *http.Request) {
	q := r.PostForm
	if q.Get("Version") != "2016-11-15" || q.Get("Filter.1.Name") != "instance-state-name" ||
		q.Get("Filter.1.Value.1") != "pending" || q.Get("Filter.1.Value.2") != "running" || q.Get("InstanceId.2") != "" {
		f.t.Errorf("DescribeInstances form = %v", q)
	}
	id := q.Get("InstanceId.1")
	inst, ok := f.instances[id]
	if id == "i-0aaaaaaaaaaaaaaa0" {
		w.WriteHeader(403)
		fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>UnauthorizedOperation</Code><Message>You are not authorized to perform this operation.</Message></Error></Errors><RequestID>req-1</RequestID></Response>`)
		return
	}
	if !ok {
		w.WriteHeader(400)
		fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>InvalidInstanceID.NotFound</Code><Message>The instance ID '%s' does not exist</Message></Error></Errors><RequestID>req-2</RequestID></Response>`, id)
		return
	}
	if inst.state != "running" && inst.state != "pending" {
		fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?>
<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>req-3</requestId><reservationSet/></DescribeInstancesResponse>`)
		return
	}
	if inst.rootDeviceType == "" {
		inst.rootDeviceType = "ebs"
	}
	ts := func(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>
<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
    <requestId>8f7724cf-496f-496e-8fe3-example</requestId>
    <reservationSet>
        <item>
            <reservationId>r-1234567890abcdef0</reservationId>
            <ownerId>%[2]s</ownerId>
            <groupSet/>
            <instancesSet>
                <item>
                    <instanceId>%[1]s</instanceId>
                    <imageId>ami-0fedcba9876543210</imageId>
                    <instanceState><code>16</code><name>%[3]s</name></instanceState>
                    <privateDnsName>ip-10-0-1-25.ec2.internal</privateDnsName>
                    <instanceType>t3.micro</instanceType>
                    <launchTime>2026-06-01T10:00:00.000Z</launchTime>
                    <placement><availabilityZone>us-east-1a</availabilityZone><tenancy>default</tenancy></placement>
                    <subnetId>subnet-0123abcd</subnetId>
                    <vpcId>vpc-0456cdef</vpcId>
                    <privateIpAddress>10.0.1.25</privateIpAddress>
                    <groupSet>
                        <item><groupId>sg-0a1b2c3d</groupId><groupName>web</groupName></item>
                        <item><groupId>sg-0e0e0e0e</groupId><groupName>ssh-from-bastion</groupName></item>
                    </groupSet>
                    <architecture>x86_64</architecture>
                    <rootDeviceType>%[4]s</rootDeviceType>
                    <rootDeviceName>/dev/xvda</rootDeviceName>
                    <blockDeviceMapping>
                        <item>
                            <deviceName>/dev/xvda</deviceName>
                            <ebs><volumeId>vol-0123</volumeId><status>attached</status><attachTime>%[5]s</attachTime><deleteOnTermination>true</deleteOnTermination></ebs>
                        </item>
                    </blockDeviceMapping>
                    <iamInstanceProfile>
                        <arn>arn:aws:iam::123456789012:instance-profile/application/web-profile</arn>
                        <id>AIPAD5ARO2C5EXAMPLE3G</id>
                    </iamInstanceProfile>
                    <networkInterfaceSet>
                        <item>
                            <networkInterfaceId>eni-0a1b2c3d</networkInterfaceId>
                            <subnetId>subnet-0123abcd</subnetId>
                            <vpcId>vpc-0456cdef</vpcId>
                            <attachment>
                                <attachmentId>eni-attach-0a1b2c3d</attachmentId>
                                <deviceIndex>%[7]d</deviceIndex>
                                <status>attached</status>
                                <attachTime>%[6]s</attachTime>
                                <deleteOnTermination>true</deleteOnTermination>
                            </attachment>
                        </item>
                    </networkInterfaceSet>
                    <tagSet>
                        <item><key>Name</key><value>web-1</value></item>
                        <item><key>team</key><value>payments</value></item>
                    </tagSet>
                </item>
            </instancesSet>
        </item>
    </reservationSet>
</DescribeInstancesResponse>`, id, inst.owner, inst.state, inst.rootDeviceType, ts(inst.rootAttach), ts(inst.eniAttach), inst.eniIndex)
}

func TestEC2Lookup(t *testing.T) {
	t.Setenv("AWS_CONFIG_FILE", "/nonexistent")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")

	boot := time.Date(2026, 6, 1, 10, 0, 0, 0, time.UTC)
	fake := &fakeAWS{t: t, instances: map[string]fakeInstance{
		"i-0123456789abcdef0": {owner: "123456789012", state: "running", rootAttach: boot, eniAttach: boot.Add(2 * time.Second)},
		"i-0bbbbbbbbbbbbbbb0": {owner: "123456789012", state: "stopped"},
		"i-0ccccccccccccccc0": {owner: "123456789012", state: "running", rootAttach: boot.Add(5 * time.Minute), eniAttach: boot},
		"i-0ddddddddddddddd0": {owner: "123456789012", state: "running", rootAttach: boot, eniAttach: boot, eniIndex: 1},
		"i-0eeeeeeeeeeeeeee0": {owner: "210987654321", state: "running", rootAttach: boot, eniAttach: boot},
		"i-0fffffffffffffff0": {owner: "123456789012", state: "pending", rootDeviceType: "instance-store", rootAttach: boot.Add(time.Hour), eniAttach: boot},
	}}
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	k := newTestKey(t, 0, nil, big.NewInt(11))

	clients := func(t *testing.T, c AWSConfig) *AWSClients {
		c.AccessKeyID, c.SecretAccessKey = "AKIDPLINTHTEST", "secret"
		c.EC2Endpoint, c.IAMEndpoint, c.STSEndpoint = srv.URL, srv.URL, srv.URL
		a, err := NewAWSClients(context.Background(), c)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	attest := func(t *testing.T, a *AWSClients, cfg ServerConfig, instance string) (*attestors.Result, error) {
		cfg.Certs = []*x509.Certificate{k.cert}
		cfg.EC2 = a.EC2
		if cfg.IAM == nil {
			cfg.IAM = a.IAM
		}
		s := newServer(t, cfg)
		doc := simulator.MarshalAWSDocument(simulator.AWSIdentityDocument{AccountID: "123456789012", Region: "us-east-1", InstanceID: instance})
		return s.Attest(context.Background(), payload(t, doc, k.sign(t, doc, signOpts{})), nil)
	}

	t.Run("selectors", func(t *testing.T) {
		fake.calls = nil
		res, err := attest(t, clients(t, AWSConfig{}), ServerConfig{}, "i-0123456789abcdef0")
		if err != nil {
			t.Fatal(err)
		}
		want := []string{
			"aws_iid:account:123456789012",
			"aws_iid:az:us-east-1a",
			"aws_iid:iamrole:arn:aws:iam::123456789012:role/application/web-role",
			"aws_iid:image:id:ami-0123456789abcdef0",
			"aws_iid:instance:id:i-0123456789abcdef0",
			"aws_iid:instance:type:t3.micro",
			"aws_iid:region:us-east-1",
			"aws_iid:sg:id:sg-0a1b2c3d",
			"aws_iid:sg:id:sg-0e0e0e0e",
			"aws_iid:sg:name:ssh-from-bastion",
			"aws_iid:sg:name:web",
			"aws_iid:subnet:id:subnet-0123abcd",
			"aws_iid:tag:Name:web-1",
			"aws_iid:tag:team:payments",
			"aws_iid:vpc:id:vpc-0456cdef",
		}
		if got := selectorStrings(res.Selectors); !slices.Equal(got, want) {
			t.Errorf("selectors =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		if res.Evidence["ec2_lookup"] != "on" {
			t.Errorf("evidence %v", res.Evidence)
		}
		wantCalls := []string{
			`DescribeInstances AKIDPLINTHTEST/us-east-1/ec2 token=""`,
			`GetInstanceProfile AKIDPLINTHTEST/us-east-1/iam token=""`,
		}
		if !slices.Equal(fake.calls, wantCalls) {
			t.Errorf("calls = %q", fake.calls)
		}
	})

	t.Run("assume role in the document's account", func(t *testing.T) {
		fake.calls = nil
		if _, err := attest(t, clients(t, AWSConfig{AssumeRole: "plinth-reader"}), ServerConfig{}, "i-0123456789abcdef0"); err != nil {
			t.Fatal(err)
		}
		wantCalls := []string{
			`AssumeRole AKIDPLINTHTEST/us-east-1/sts token=""`,
			`DescribeInstances ASIAASSUMEDROLE/us-east-1/ec2 token="assumed-session-token"`,
			`GetInstanceProfile ASIAASSUMEDROLE/us-east-1/iam token="assumed-session-token"`,
		}
		if !slices.Equal(fake.calls, wantCalls) {
			t.Errorf("calls = %q", fake.calls)
		}
	})

	t.Run("instance profile selectors disabled", func(t *testing.T) {
		res, err := attest(t, clients(t, AWSConfig{}), ServerConfig{DisableInstanceProfileSelectors: true}, "i-0123456789abcdef0")
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range res.Selectors {
			if strings.HasPrefix(s.Value, "iamrole:") {
				t.Errorf("got %s", s)
			}
		}
	})

	t.Run("instance store root skips the attach time check", func(t *testing.T) {
		if _, err := attest(t, clients(t, AWSConfig{}), ServerConfig{}, "i-0fffffffffffffff0"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("skip block device", func(t *testing.T) {
		if _, err := attest(t, clients(t, AWSConfig{}), ServerConfig{SkipBlockDevice: true}, "i-0ccccccccccccccc0"); err != nil {
			t.Fatal(err)
		}
	})

	rejects := []struct {
		instance, want string
	}{
		{"i-0bbbbbbbbbbbbbbb0", "instance i-0bbbbbbbbbbbbbbb0 is not pending or running"},
		{"i-0999999999999999a", "instance i-0999999999999999a: EC2 does not know it in account 123456789012 region us-east-1"},
		{"i-0ccccccccccccccc0", "instance i-0ccccccccccccccc0: block device check: the root volume and the primary network interface were attached 5m0s apart (more than 1m0s)"},
		{"i-0ddddddddddddddd0", "instance i-0ddddddddddddddd0: block device check: no network interface is attached at device index 0"},
		{"i-0eeeeeeeeeeeeeee0", "instance i-0eeeeeeeeeeeeeee0: EC2 places it in account 210987654321, the document says 123456789012"},
	}
	for _, tc := range rejects {
		t.Run(tc.want, func(t *testing.T) {
			_, err := attest(t, clients(t, AWSConfig{}), ServerConfig{}, tc.instance)
			if !errors.Is(err, attestors.ErrRejected) || err.Error() != "attestation rejected: "+tc.want {
				t.Fatalf("err = %v\nwant %s", err, tc.want)
			}
		})
	}

	t.Run("API refusal is an error, not a rejection", func(t *testing.T) {
		_, err := attest(t, clients(t, AWSConfig{}), ServerConfig{}, "i-0aaaaaaaaaaaaaaa0")
		if err == nil || errors.Is(err, attestors.ErrRejected) || !strings.Contains(err.Error(), "UnauthorizedOperation") {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("IAM failure is an error", func(t *testing.T) {
		a := clients(t, AWSConfig{})
		iam := func(ctx context.Context, account string) (IAMAPI, error) {
			return iamFunc(func(ctx context.Context, arn string) ([]string, error) {
				c, _ := a.IAM(ctx, account)
				return c.InstanceProfileRoles(ctx, strings.Replace(arn, "web-profile", "nope", 1))
			}), nil
		}
		_, err := attest(t, a, ServerConfig{IAM: iam}, "i-0123456789abcdef0")
		want := "awsiid: instance i-0123456789abcdef0: IAM GetInstanceProfile nope: NoSuchEntity: Instance Profile nope cannot be found."
		if err == nil || errors.Is(err, attestors.ErrRejected) || err.Error() != want {
			t.Fatalf("err = %v\nwant %s", err, want)
		}
	})
}

type iamFunc func(ctx context.Context, arn string) ([]string, error)

func (f iamFunc) InstanceProfileRoles(ctx context.Context, arn string) ([]string, error) {
	return f(ctx, arn)
}

func TestProfileName(t *testing.T) {
	for arn, want := range map[string]string{
		"arn:aws:iam::123456789012:instance-profile/web":              "aws web",
		"arn:aws-cn:iam::123456789012:instance-profile/a/b/web":       "aws-cn web",
		"arn:aws:iam::123456789012:role/web":                          "error",
		"arn:aws:ec2:us-east-1:123456789012:instance-profile/web":     "error",
		"instance-profile/web":                                        "error",
		"arn:aws-us-gov:iam::123456789012:instance-profile/path/web2": "aws-us-gov web2",
	} {
		p, n, err := profileName(arn)
		got := p + " " + n
		if err != nil {
			got = "error"
		}
		if got != want {
			t.Errorf("profileName(%s) = %s, want %s", arn, got, want)
		}
	}
}

func TestNewAWSClientsConfig(t *testing.T) {
	for _, c := range []AWSConfig{{AccessKeyID: "x"}, {SecretAccessKey: "y"}, {EC2Endpoint: "localhost:4566"}} {
		if _, err := NewAWSClients(context.Background(), c); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}
