// Package awsiid is the aws_iid node attestor, compatible with SPIRE's: an
// EC2 instance proves which instance it is with the instance identity
// document AWS signs for it, and becomes
// spiffe://<td>/spire/agent/aws_iid/<account>/<region>/<instance>.
//
// # Agent
//
// The agent half reads IMDSv2: a session token (PUT /latest/api/token), then
// /latest/dynamic/instance-identity/document and .../rsa2048, the document's
// RSA-2048 PKCS#7 signature. It sends both, untouched, as the payload
// {"v":1,"document":…,"rsa2048":…}. IMDS unreachable, failing or serving
// garbage is retried (3 tries, waiting 200 ms then 400 ms) and reported with
// the URL and the problem:
//
//	a, err := awsiid.NewAgent(awsiid.AgentConfig{})   // http://169.254.169.254
//	payload, err := a.Payload(ctx, agentKey)
//
// An agent in a container on a bridge network is one hop further from IMDS
// than the instance: IMDSv2 answers it only if the instance's metadata
// options allow a PUT response hop limit of 2.
//
// # Server
//
//	s, err := awsiid.NewServer(awsiid.ServerConfig{
//		TrustDomain: td,
//		Accounts:    []string{"123456789012"},
//		Regions:     []string{"us-east-1", "eu-west-1"},
//		Attested:    agentExists, // has this agent ID attested before?
//	})
//	res, err := s.Attest(ctx, payload, nil)
//
// Attest checks, in order: the payload; the signature; the document;
// the region binding; the account and region allowlists; the instance age;
// replay; and, when configured, the EC2 lookup. Every refusal wraps
// attestors.ErrRejected and says which check failed.
//
// # What is trusted
//
// Only the signature makes the document trustworthy, and only a configured
// certificate makes the signature trustworthy. The server trusts AWS's
// published per-region RSA-2048 certificates, shipped in this package
// (aws-rsa2048.pem, see AWSCertificates), plus the certificates in
// ServerConfig.Certs. A certificate carried inside the PKCS#7 is never used
// to verify: the signer is looked up among the trusted certificates by the
// issuer and serial number the PKCS#7 names, its key alone checks the
// signature, and an embedded certificate that claims to be the signer but
// differs from it is refused ("PKCS#7 signer certificate differs from the
// trusted certificate"). This is the class of bug behind SPIRE's azure_msi
// advisory, where the evidence supplied the certificate it was checked with.
//
// The signed content must be the presented document byte for byte; the
// document is parsed only after that, so no field is read from unsigned
// bytes. A shipped certificate signs only for its own region: a document
// naming another region is refused even if the signature verifies. A
// configured certificate may sign any region, which is what a simulator needs
// and why a production server should configure none.
//
// The document never expires. Anyone who reads it on the instance (any
// process that can reach IMDS) can replay it from elsewhere, so by default a
// second attestation for the same instance is refused, as SPIRE does ("trust
// on first use"); AllowReattestation turns that off, and MaxInstanceAge
// bounds how long after the instance started (pendingTime) it may attest.
// The agent key is not bound to the document: aws_iid proves an instance,
// not a key.
//
// # Selectors
//
//	aws_iid:account:<id>              document (Plinth)
//	aws_iid:region:<region>           document (SPIRE)
//	aws_iid:az:<zone>                 document (SPIRE)
//	aws_iid:image:id:<ami>            document (SPIRE)
//	aws_iid:instance:id:<id>          document (SPIRE)
//	aws_iid:instance:type:<type>      document (Plinth)
//	aws_iid:tag:<key>:<value>         EC2 lookup (SPIRE)
//	aws_iid:sg:id:<id>                EC2 lookup (SPIRE)
//	aws_iid:sg:name:<name>            EC2 lookup (SPIRE)
//	aws_iid:iamrole:<role ARN>        EC2 + IAM lookup (SPIRE)
//	aws_iid:subnet:id:<id>            EC2 lookup (Plinth)
//	aws_iid:vpc:id:<id>               EC2 lookup (Plinth)
//
// # EC2 lookup
//
// With ServerConfig.EC2 set (NewAWSClients: credentials from the SDK's
// standard chain or static keys, an optional role to assume in each
// document's account, endpoint overrides), the server calls DescribeInstances
// for the instance in the document's region. It refuses an instance that is
// not pending or running, one EC2 places in another account, and, unless
// SkipBlockDevice, one whose root volume was attached more than a minute
// apart from its primary network interface (SPIRE's anti-tampering check).
// API failures are errors, not rejections. Tag values come from whoever may
// tag the instance; select on them only if that is restricted.
//
// For development and CI, simulator.NewAWSIMDS serves signed documents from a
// test key; the server trusts them only when its CertPEM is configured.
package awsiid
