package conf

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/plinth-id/plinth/tpm/verify"
)

func TestBootPoliciesRoundTrip(t *testing.T) {
	on := true
	p := verify.Policy{Name: "prod", Requirements: verify.Requirements{SecureBoot: &on, DBXContains: []string{strings.Repeat("ab", 32)},
		PCRs: []verify.PCRValue{{Bank: "sha256", Index: 0, Value: strings.Repeat("00", 32)}}},
		References: []verify.Reference{{Name: "k1", Requirements: verify.Requirements{BootApps: []string{strings.Repeat("ef", 32)}, BootFiles: []string{strings.Repeat("cd", 32)}, Cmdlines: []string{`ro "quoted"`}}},
			{Name: "k2", Requirements: verify.Requirements{Firmware: []string{"v1"}}}}}
	got, err := ParseBootPolicies("p.hcl", FormatBootPolicy(p))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Name != "prod" || *got[0].SecureBoot != true || len(got[0].References) != 2 ||
		got[0].References[0].Cmdlines[0] != `ro "quoted"` || got[0].PCRs[0] != p.PCRs[0] {
		t.Fatalf("round trip: %+v", got)
	}
}

func TestBootPolicyErrors(t *testing.T) {
	tests := []struct{ src, want string }{
		{``, "p.hcl:1: the file holds no policy"},
		{`policy "a" { secure_boot = "yes" }`, `p.hcl:1: secure_boot: want true or false, got a string`},
		{"policy \"a\" {\n boot_files = [\"XYZ\"]\n}", `p.hcl:1: policy a: boot_files: "XYZ" is not a lowercase hex digest`},
		{"policy \"a\" {\n kernel_cmdlines = [\"ro\"]\n}", `p.hcl:1: policy a: kernel_cmdlines needs boot_apps beside it (in the policy or the reference): without a pinned boot path, the OS could measure an allowed command line after boot`},
		{"policy \"a\" {\n secure_boot = true\n boot_file = []\n}", `p.hcl:3: unknown key "boot_file" in policy "a" (did you mean "boot_files"?)`},
		{"policy \"a\" { secure_boot = true }\npolicy \"a\" { secure_boot = true }", `p.hcl:2: duplicate policy "a" (first on line 1)`},
		{"policy \"a\" {\n pcrs = [\"sha256:x:00\", \"sha256:1:00\"]\n}", `p.hcl:2: pcrs: "sha256:x:00": want bank:index:hex, e.g. sha256:7:3d45…`},
		{"rule \"a\" {}", `p.hcl:1: unknown top-level key "rule" (a policy file holds policy "name" { … } blocks)`},
		{"policy {}", `p.hcl:1: policy: want policy "name" { … }`},
		{"policy \"a\" {\n reference \"r\" { secure_boot = true }\n reference \"r\" {}\n}", `p.hcl:3: duplicate reference "r" in policy "a" (first on line 2)`},
		{`policy "a" {}`, "p.hcl:1: policy a requires nothing, so every boot would pass it; there is no accept-all policy"},
		{`policy "a" { reference "r" {} }`, "p.hcl:1: policy a: reference r requires nothing, so every boot would match it"},
	}
	for _, tc := range tests {
		_, err := ParseBootPolicies("p.hcl", []byte(tc.src))
		if err == nil || err.Error() != tc.want {
			t.Errorf("%q:\ngot  %v\nwant %s", tc.src, err, tc.want)
		}
	}
}

func TestMeasuredBootConfig(t *testing.T) {
	dir := t.TempDir()
	policy := filepath.Join(dir, "boot.hcl")
	os.WriteFile(policy, []byte(`policy "prod" { secure_boot = true }`), 0o600)
	server := func(mb string) string {
		return `server { trust_domain = "example.org" data_dir = "/tmp/x" }
plugins {
  DataStore "sql" { plugin_data { database_type = "sqlite3" connection_string = "x.db" } }
  KeyManager "memory" { plugin_data {} }
  NodeAttestor "tpm" { plugin_data {
    enrollment = "enrolled"
    ` + mb + `
  } }
}`
	}
	tests := []struct{ mb, want string }{
		{`measured_boot { policy_file = "` + policy + `" policy = "prod" mode = "audit" reattestation_interval = "10m" }`, ""},
		{`measured_boot {}`, "s.conf:7: measured boot needs a policy: set policy_file and policy (the name of the policy every node must pass); there is no accept-all default"},
		{`measured_boot { policy_file = "` + policy + `" policy = "staging" }`, `s.conf:7: policy: ` + policy + ` has no policy "staging" (it has prod)`},
		{`measured_boot { policy_file = "/nonexistent" policy = "prod" }`, "s.conf:7: policy_file: conf: open /nonexistent: no such file or directory"},
		{`measured_boot { policy_file = "` + policy + `" policy = "prod" mode = "warn" }`, `s.conf:7: mode: "warn" is not a mode; want enforce or audit`},
	}
	for _, tc := range tests {
		s, err := ParseServer("s.conf", []byte(server(tc.mb)))
		if tc.want == "" {
			if err != nil {
				t.Fatal(err)
			}
			mb := s.NodeAttestors[0].Settings.(TPMNodeAttestor).MeasuredBoot
			if mb == nil || !mb.Audit || mb.Policy != "prod" || len(mb.Policies) != 1 || mb.ReattestInterval.Minutes() != 10 {
				t.Fatalf("measured boot %+v", mb)
			}
			continue
		}
		if err == nil || err.Error() != tc.want {
			t.Errorf("%s:\ngot  %v\nwant %s", tc.mb, err, tc.want)
		}
	}
}

func TestBootPolicyExample(t *testing.T) {
	ps, err := LoadBootPolicies("examples/boot-policy.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 2 || ps[0].Name != "prod" || len(ps[0].References) != 2 || len(ps[0].DB.Allowed) != 2 {
		t.Fatalf("example policies: %+v", ps)
	}
}
