package awsiid

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
	"github.com/plinth-id/plinth/attestors"
)

// EC2API is the part of the EC2 API the server half calls; *ec2.Client
// implements it.
type EC2API interface {
	DescribeInstances(ctx context.Context, in *ec2.DescribeInstancesInput, opts ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
}

// IAMAPI resolves an instance profile to the ARNs of its roles.
type IAMAPI interface {
	InstanceProfileRoles(ctx context.Context, instanceProfileARN string) ([]string, error)
}

// maxAttachSkew is how far apart (in either direction) the root volume and
// the primary network interface may have been attached, as in SPIRE.
const maxAttachSkew = 60 * time.Second

// lookup describes the instance and returns the selectors it supports. It
// refuses an instance that is not pending or running, one that EC2 places in
// another account, and (unless SkipBlockDevice) one whose root volume was
// attached apart from its primary network interface. API failures are
// returned as errors, not rejections.
func (s *Server) lookup(ctx context.Context, d *document) ([]attestors.Selector, error) {
	ctx, cancel := context.WithTimeout(ctx, s.c.LookupTimeout)
	defer cancel()
	client, err := s.c.EC2(ctx, d.Region, d.AccountID)
	if err != nil {
		return nil, fmt.Errorf("awsiid: EC2 client for account %s region %s: %w", d.AccountID, d.Region, err)
	}
	out, err := client.DescribeInstances(ctx, &ec2.DescribeInstancesInput{
		InstanceIds: []string{d.InstanceID},
		Filters: []ec2types.Filter{{
			Name:   aws.String("instance-state-name"),
			Values: []string{"pending", "running"},
		}},
	})
	if err != nil {
		var ae smithy.APIError
		if errors.As(err, &ae) && ae.ErrorCode() == "InvalidInstanceID.NotFound" {
			return nil, attestors.Rejectf("instance %s: EC2 does not know it in account %s region %s", d.InstanceID, d.AccountID, d.Region)
		}
		return nil, fmt.Errorf("awsiid: describe instance %s: %w", d.InstanceID, err)
	}
	var inst *ec2types.Instance
	var owner string
	for _, r := range out.Reservations {
		for i := range r.Instances {
			if aws.ToString(r.Instances[i].InstanceId) == d.InstanceID {
				inst, owner = &r.Instances[i], aws.ToString(r.OwnerId)
			}
		}
	}
	if inst == nil {
		return nil, attestors.Rejectf("instance %s is not pending or running", d.InstanceID)
	}
	if owner != "" && owner != d.AccountID {
		return nil, attestors.Rejectf("instance %s: EC2 places it in account %s, the document says %s", d.InstanceID, owner, d.AccountID)
	}
	if !s.c.SkipBlockDevice {
		if err := checkBlockDevice(inst); err != nil {
			return nil, attestors.Rejectf("instance %s: block device check: %v", d.InstanceID, err)
		}
	}
	sels := instanceSelectors(inst)
	if s.c.IAM != nil && !s.c.DisableInstanceProfileSelectors && inst.IamInstanceProfile != nil && inst.IamInstanceProfile.Arn != nil {
		iam, err := s.c.IAM(ctx, d.AccountID)
		if err != nil {
			return nil, fmt.Errorf("awsiid: IAM client for account %s: %w", d.AccountID, err)
		}
		roles, err := iam.InstanceProfileRoles(ctx, *inst.IamInstanceProfile.Arn)
		if err != nil {
			return nil, fmt.Errorf("awsiid: instance %s: %w", d.InstanceID, err)
		}
		for _, r := range roles {
			sels = append(sels, attestors.Selector{Type: Name, Value: "iamrole:" + r})
		}
	}
	return sels, nil
}

// instanceSelectors: tag, sg:id and sg:name are SPIRE's; subnet:id and vpc:id
// are Plinth's.
func instanceSelectors(inst *ec2types.Instance) []attestors.Selector {
	var out []attestors.Selector
	add := func(v string) { out = append(out, attestors.Selector{Type: Name, Value: v}) }
	for _, t := range inst.Tags {
		add("tag:" + aws.ToString(t.Key) + ":" + aws.ToString(t.Value))
	}
	for _, g := range inst.SecurityGroups {
		if g.GroupId != nil {
			add("sg:id:" + *g.GroupId)
		}
		if g.GroupName != nil {
			add("sg:name:" + *g.GroupName)
		}
	}
	if inst.SubnetId != nil {
		add("subnet:id:" + *inst.SubnetId)
	}
	if inst.VpcId != nil {
		add("vpc:id:" + *inst.VpcId)
	}
	return out
}

// checkBlockDevice is SPIRE's anti-tampering check: an instance must have a
// network interface at device index 0, and unless its root device is an
// instance store, the root volume must have been attached within a minute of
// that interface. A root volume attached later may have been taken from (or
// swapped into) another instance.
func checkBlockDevice(inst *ec2types.Instance) error {
	var eni *ec2types.InstanceNetworkInterfaceAttachment
	for _, n := range inst.NetworkInterfaces {
		if a := n.Attachment; a != nil && a.DeviceIndex != nil && *a.DeviceIndex == 0 {
			eni = a
		}
	}
	if eni == nil {
		return errors.New("no network interface is attached at device index 0")
	}
	if inst.RootDeviceType == ec2types.DeviceTypeInstanceStore {
		return nil
	}
	root := aws.ToString(inst.RootDeviceName)
	var vol *ec2types.EbsInstanceBlockDevice
	for _, b := range inst.BlockDeviceMappings {
		if aws.ToString(b.DeviceName) == root && root != "" {
			vol = b.Ebs
		}
	}
	if vol == nil {
		return fmt.Errorf("no block device mapping for the root device %q", root)
	}
	if eni.AttachTime == nil || vol.AttachTime == nil {
		return errors.New("EC2 reports no attach time for the root volume or the primary network interface")
	}
	skew := vol.AttachTime.Sub(*eni.AttachTime)
	if skew < 0 {
		skew = -skew
	}
	if skew > maxAttachSkew {
		return fmt.Errorf("the root volume and the primary network interface were attached %s apart (more than %s)", skew, maxAttachSkew)
	}
	return nil
}

// profileName is the name in an instance profile ARN
// (arn:aws:iam::123456789012:instance-profile/path/name).
func profileName(arn string) (partition, name string, err error) {
	parts := strings.SplitN(arn, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" || parts[2] != "iam" {
		return "", "", fmt.Errorf("%q is not an IAM ARN", arn)
	}
	res, ok := strings.CutPrefix(parts[5], "instance-profile/")
	if !ok || res == "" {
		return "", "", fmt.Errorf("%q is not an instance profile ARN", arn)
	}
	return parts[1], res[strings.LastIndex(res, "/")+1:], nil
}
