package main

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/plinth-id/plinth/attestors"
	"github.com/plinth-id/plinth/attestors/awsiid"
	"github.com/plinth-id/plinth/attestors/azuremsi"
	"github.com/plinth-id/plinth/attestors/composite"
	"github.com/plinth-id/plinth/attestors/gcpiit"
	"github.com/plinth-id/plinth/attestors/jointoken"
	tpmattestor "github.com/plinth-id/plinth/attestors/tpm"
	"github.com/plinth-id/plinth/conf"
	"github.com/plinth-id/plinth/hsm"
	"github.com/plinth-id/plinth/hsm/awskms"
	"github.com/plinth-id/plinth/hsm/disk"
	"github.com/plinth-id/plinth/hsm/memory"
	"github.com/plinth-id/plinth/hsm/pkcs11"
	"github.com/plinth-id/plinth/server"
	"github.com/plinth-id/plinth/server/ca"
	"github.com/plinth-id/plinth/server/datastore"
	"github.com/plinth-id/plinth/tpm/verify"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func runServer(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	config := fs.String("config", "conf/server/server.conf", "Path to a plinth-server config file")
	expandEnv := fs.Bool("expandEnv", false, "Expand environment variables in the config file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := conf.LoadServer(*config, *expandEnv)
	if err != nil {
		return err
	}
	log, closeLog, err := conf.NewLogger(cfg.LogLevel, cfg.LogFormat, cfg.LogFile)
	if err != nil {
		return err
	}
	defer closeLog()

	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("could not create data_dir %s: %w", cfg.DataDir, err)
	}
	store, err := openDataStore(ctx, cfg.DataStore)
	if err != nil {
		return err
	}
	defer store.Close()
	keys, err := newKeyManager(ctx, cfg, log)
	if err != nil {
		return err
	}
	nas, err := newNodeAttestors(ctx, cfg, store, log)
	if err != nil {
		return err
	}
	c := server.Config{
		TrustDomain: cfg.TrustDomain,
		ListenAddr:  net.JoinHostPort(cfg.BindAddress, strconv.Itoa(cfg.BindPort)),
		SocketPath:  cfg.SocketPath,
		Store:       store, Keys: keys, NodeAttestors: nas,
		CATTL: cfg.CATTL, X509SVIDTTL: cfg.DefaultX509SVIDTTL, JWTSVIDTTL: cfg.DefaultJWTSVIDTTL, AgentTTL: cfg.AgentTTL,
		CAKeyType: cfg.CAKeyType, JWTKeyType: cfg.JWTKeyType, CASubject: cfg.CASubject, JWTIssuer: cfg.JWTIssuer,
		AdminIDs: cfg.AdminIDs,
		Log:      log,
	}
	if h := cfg.HealthChecks; h.ListenerEnabled {
		c.HealthAddr = net.JoinHostPort(h.BindAddress, strconv.Itoa(h.BindPort))
		c.LivePath, c.ReadyPath = h.LivePath, h.ReadyPath
	}
	if cfg.UpstreamAuthority != nil {
		if c.Upstream, err = newUpstream(*cfg.UpstreamAuthority); err != nil {
			return err
		}
	}
	s, err := server.New(c)
	if err != nil {
		return err
	}
	return s.Run(ctx)
}

// The implementations this binary knows, chosen by the names in the config.
// This is the only place they are named.

func openDataStore(ctx context.Context, p conf.Plugin) (*datastore.Store, error) {
	switch s := p.Settings.(type) {
	case conf.SQLDataStore:
		if s.DatabaseType != "sqlite3" {
			return nil, fmt.Errorf("DataStore %q: database_type %q is not supported yet", p.Name, s.DatabaseType)
		}
		return datastore.Open(ctx, s.ConnectionString)
	}
	return nil, fmt.Errorf("DataStore %q is not supported", p.Name)
}

func newKeyManager(ctx context.Context, cfg *conf.Server, log *slog.Logger) (hsm.KeyManager, error) {
	p := cfg.KeyManager
	switch s := p.Settings.(type) {
	case conf.DiskKeyManager:
		return disk.New(s.KeysPath)
	case conf.MemoryKeyManager:
		return memory.New(), nil
	case conf.PKCS11KeyManager:
		pin, err := readPIN(s.PKCS11)
		if err != nil {
			return nil, fmt.Errorf(`KeyManager "pkcs11": %w`, err)
		}
		return pkcs11.New(pkcs11.Config{Module: s.ModulePath, TokenLabel: s.TokenLabel, PIN: pin, KeyIDPrefix: s.KeyPrefix, Log: log.With("part", "pkcs11")})
	case conf.AWSKMSKeyManager:
		c := awskms.Config{Region: s.Region, Endpoint: s.Endpoint, AliasPrefix: s.AliasPrefix, ServerID: s.ServerID, Log: log.With("part", "aws_kms")}
		if c.ServerID == "" {
			host, err := os.Hostname()
			if err != nil {
				return nil, fmt.Errorf(`KeyManager "aws_kms": server_id is not set and the host name is unknown: %w`, err)
			}
			c.ServerID = host
		}
		if c.AliasPrefix == "" {
			// KMS aliases allow no dots.
			c.AliasPrefix = "alias/plinth/" + strings.NewReplacer(".", "_").Replace(cfg.TrustDomain.Name()) + "/"
		}
		return awskms.New(ctx, c)
	}
	return nil, fmt.Errorf("KeyManager %q is not supported", p.Name)
}

func newNodeAttestors(ctx context.Context, cfg *conf.Server, store *datastore.Store, log *slog.Logger) ([]attestors.NodeAttestor, error) {
	var out []attestors.NodeAttestor
	for _, p := range cfg.NodeAttestors {
		switch s := p.Settings.(type) {
		case conf.JoinTokenNodeAttestor:
			out = append(out, jointoken.NewServer(cfg.TrustDomain, redeemJoinToken(store)))
		case conf.TPMNodeAttestor:
			na, err := newTPMAttestor(cfg, s, store)
			if err != nil {
				return nil, err
			}
			out = append(out, na)
		case conf.AWSIIDNodeAttestor:
			na, err := newAWSIID(ctx, cfg, s, store)
			if err != nil {
				return nil, fmt.Errorf(`NodeAttestor "aws_iid": %w`, err)
			}
			out = append(out, na)
		case conf.GCPIITNodeAttestor:
			keys, err := gcpKeys(s.JWKSFile, s.JWKSURL)
			if err != nil {
				return nil, fmt.Errorf(`NodeAttestor "gcp_iit": %w`, err)
			}
			na, err := gcpiit.NewServer(gcpiit.ServerConfig{TrustDomain: cfg.TrustDomain, Audience: s.Audience, Keys: keys, ProjectIDs: s.ProjectIDs,
				MaxAge: s.MaxAge, AllowReattestation: s.AllowReattestation, Attested: attested(store), Logger: log})
			if err != nil {
				return nil, err
			}
			out = append(out, na)
		case conf.AzureMSINodeAttestor:
			tenants := map[string]azuremsi.TenantConfig{}
			for id, t := range s.Tenants {
				tc := azuremsi.TenantConfig{Resource: t.Resource, KeysURL: t.JWKSURL}
				if t.JWKSFile != "" {
					b, err := os.ReadFile(t.JWKSFile)
					if err != nil {
						return nil, fmt.Errorf(`NodeAttestor "azure_msi": tenant %s: %w`, id, err)
					}
					if tc.Keys, err = azuremsi.ParseJWKS(b); err != nil {
						return nil, fmt.Errorf(`NodeAttestor "azure_msi": tenant %s: jwks_file %s: %w`, id, t.JWKSFile, err)
					}
				}
				tenants[id] = tc
			}
			na, err := azuremsi.NewServer(azuremsi.ServerConfig{TrustDomain: cfg.TrustDomain, Resource: s.Resource, Tenants: tenants,
				AllowReattestation: s.AllowReattestation, Attested: attested(store), Logger: log})
			if err != nil {
				return nil, err
			}
			out = append(out, na)
		default:
			return nil, fmt.Errorf("NodeAttestor %q is not supported", p.Name)
		}
	}
	if len(out) > 1 {
		// Nodes may present several kinds of evidence in one attestation.
		out = append(out, composite.NewServer(out))
	}
	return out, nil
}

// attested reports whether an agent ID is attested (cloud attestors refuse
// a second attestation of the same instance unless configured otherwise).
func attested(store *datastore.Store) func(context.Context, spiffeid.ID) (bool, error) {
	return func(ctx context.Context, id spiffeid.ID) (bool, error) {
		_, err := store.GetAgent(ctx, id.String())
		if errors.Is(err, datastore.ErrNotFound) {
			return false, nil
		}
		return err == nil, err
	}
}

func newAWSIID(ctx context.Context, cfg *conf.Server, s conf.AWSIIDNodeAttestor, store *datastore.Store) (*awsiid.Server, error) {
	c := awsiid.ServerConfig{TrustDomain: cfg.TrustDomain, Accounts: s.Accounts, Regions: s.Regions, MaxInstanceAge: s.MaxInstanceAge,
		AllowReattestation: s.AllowReattestation, SkipBlockDevice: s.SkipBlockDevice, DisableInstanceProfileSelectors: s.DisableInstanceProfileSelectors,
		Attested: func(ctx context.Context, id string) (bool, error) {
			sid, err := spiffeid.FromString(id)
			if err != nil {
				return false, err
			}
			return attested(store)(ctx, sid)
		}}
	for _, f := range s.ExtraCertFiles {
		certs, err := conf.LoadCertificates(f)
		if err != nil {
			return nil, fmt.Errorf("extra_cert_files: %w", err)
		}
		c.Certs = append(c.Certs, certs...)
	}
	if s.EC2Lookup {
		clients, err := awsiid.NewAWSClients(ctx, awsiid.AWSConfig{AccessKeyID: s.AccessKeyID, SecretAccessKey: s.SecretAccessKey, AssumeRole: s.AssumeRole,
			Partition: s.Partition, EC2Endpoint: s.EC2Endpoint, IAMEndpoint: s.IAMEndpoint, STSEndpoint: s.STSEndpoint})
		if err != nil {
			return nil, err
		}
		c.EC2 = clients.EC2
		if !s.DisableInstanceProfileSelectors {
			c.IAM = clients.IAM
		}
	}
	return awsiid.NewServer(c)
}

// gcpKeys builds gcp_iit's key source: keys from a file, downloaded from a
// URL (Google's published keys when neither is set), or both.
func gcpKeys(file, url string) (gcpiit.KeySource, error) {
	var sources gcpiit.KeySources
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		k, err := gcpiit.ParseJWKS(b)
		if err != nil {
			return nil, fmt.Errorf("jwks_file %s: %w", file, err)
		}
		sources = append(sources, k)
	}
	if url != "" || file == "" {
		if url == "" {
			url = gcpiit.GoogleKeysURL
		}
		k, err := gcpiit.NewHTTPKeys(gcpiit.HTTPKeysConfig{URL: url})
		if err != nil {
			return nil, err
		}
		sources = append(sources, k)
	}
	if len(sources) == 1 {
		return sources[0], nil
	}
	return sources, nil
}

func newTPMAttestor(cfg *conf.Server, s conf.TPMNodeAttestor, store *datastore.Store) (*tpmattestor.Server, error) {
	c := tpmattestor.ServerConfig{TrustDomain: cfg.TrustDomain, Mode: tpmattestor.Mode(s.Enrollment), PCRs: s.PCRs, Enrolled: store.Enrolled}
	if m := s.MeasuredBoot; m != nil {
		c.MeasuredBoot = &tpmattestor.MeasuredBoot{Policies: m.Policies, Required: m.Policy, Audit: m.Audit, ReattestInterval: m.ReattestInterval}
	}
	if s.EKCAPath != "" {
		pemBundle, err := os.ReadFile(s.EKCAPath)
		if err != nil {
			return nil, fmt.Errorf("NodeAttestor \"tpm\": could not read ek_ca_path: %w", err)
		}
		if c.EKCerts, err = verify.LoadEKVerifier(pemBundle); err != nil {
			return nil, fmt.Errorf("NodeAttestor \"tpm\": ek_ca_path %s: %w", s.EKCAPath, err)
		}
	}
	return tpmattestor.NewServer(c)
}

func newUpstream(p conf.Plugin) (*ca.Upstream, error) {
	switch s := p.Settings.(type) {
	case conf.DiskUpstreamAuthority:
		certs, err := conf.LoadCertificates(s.CertFilePath)
		if err != nil {
			return nil, fmt.Errorf("UpstreamAuthority \"disk\": cert_file_path: %w", err)
		}
		keyPEM, err := os.ReadFile(s.KeyFilePath)
		if err != nil {
			return nil, fmt.Errorf("UpstreamAuthority \"disk\": key_file_path: %w", err)
		}
		key, err := parsePEMKey(keyPEM)
		if err != nil {
			return nil, fmt.Errorf("UpstreamAuthority \"disk\": key_file_path %s: %w", s.KeyFilePath, err)
		}
		var roots []*x509.Certificate
		if s.BundleFilePath != "" {
			if roots, err = conf.LoadCertificates(s.BundleFilePath); err != nil {
				return nil, fmt.Errorf("UpstreamAuthority \"disk\": bundle_file_path: %w", err)
			}
		}
		return upstream(certs, key, roots)
	case conf.PKCS11UpstreamAuthority:
		certs, err := conf.LoadCertificates(s.CertFilePath)
		if err != nil {
			return nil, fmt.Errorf("UpstreamAuthority \"pkcs11\": cert_file_path: %w", err)
		}
		pin, err := readPIN(s.PKCS11)
		if err != nil {
			return nil, fmt.Errorf("UpstreamAuthority \"pkcs11\": %w", err)
		}
		m, err := pkcs11.New(pkcs11.Config{Module: s.ModulePath, TokenLabel: s.TokenLabel, PIN: pin})
		if err != nil {
			return nil, fmt.Errorf("UpstreamAuthority \"pkcs11\": %w", err)
		}
		key, err := m.GetKey(context.Background(), s.KeyLabel)
		if err != nil {
			return nil, fmt.Errorf("UpstreamAuthority \"pkcs11\": key %q: %w", s.KeyLabel, err)
		}
		var roots []*x509.Certificate
		if s.BundleFilePath != "" {
			if roots, err = conf.LoadCertificates(s.BundleFilePath); err != nil {
				return nil, fmt.Errorf("UpstreamAuthority \"pkcs11\": bundle_file_path: %w", err)
			}
		}
		return upstream(certs, key, roots)
	}
	return nil, fmt.Errorf("UpstreamAuthority %q is not supported", p.Name)
}

// readPIN reads a PKCS#11 PIN from its file or environment variable. The
// PIN is never logged nor echoed in errors.
func readPIN(p conf.PKCS11) (string, error) {
	if p.PINEnv != "" {
		pin, ok := os.LookupEnv(p.PINEnv)
		if !ok || pin == "" {
			return "", fmt.Errorf("the environment variable %s (pin_env) is not set", p.PINEnv)
		}
		return pin, nil
	}
	b, err := os.ReadFile(p.PINFile)
	if err != nil {
		return "", fmt.Errorf("could not read pin_file: %w", err)
	}
	pin := strings.TrimRight(string(b), "\r\n")
	if pin == "" {
		return "", fmt.Errorf("pin_file %s is empty", p.PINFile)
	}
	return pin, nil
}

// upstream checks an upstream CA chain and key and says what the bundle is.
func upstream(certs []*x509.Certificate, key crypto.Signer, roots []*x509.Certificate) (*ca.Upstream, error) {
	cert := certs[0]
	if !cert.IsCA {
		return nil, errors.New("the upstream certificate is not a CA certificate")
	}
	if k, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(cert.PublicKey) {
		return nil, errors.New("the upstream key does not match the upstream certificate")
	}
	up := &ca.Upstream{Cert: cert, Key: key, Roots: roots}
	selfSigned := cert.CheckSignatureFrom(cert) == nil
	if !selfSigned {
		up.Intermediates = append(up.Intermediates, cert)
	}
	up.Intermediates = append(up.Intermediates, certs[1:]...)
	if len(up.Roots) == 0 {
		if !selfSigned {
			return nil, errors.New("the upstream certificate is not a root: set bundle_file_path to the roots")
		}
		up.Roots = []*x509.Certificate{cert}
	}
	return up, nil
}

func parsePEMKey(data []byte) (crypto.Signer, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, errors.New("no PEM block")
	}
	var k any
	var err error
	switch b.Type {
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	default:
		k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	}
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unsupported key %T", k)
	}
	return s, nil
}

// redeemJoinToken adapts the datastore's token table to the join_token attestor.
func redeemJoinToken(store *datastore.Store) jointoken.Redeem {
	return func(ctx context.Context, token string) error {
		_, err := store.ConsumeJoinToken(ctx, token, time.Now())
		switch {
		case errors.Is(err, datastore.ErrNotFound):
			return jointoken.ErrUnknown
		case errors.Is(err, datastore.ErrExpired):
			return jointoken.ErrExpired
		}
		return err
	}
}
