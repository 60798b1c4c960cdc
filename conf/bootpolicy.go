package conf

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/hcl/ast"
	"github.com/hashicorp/hcl/hcl/token"
	"github.com/plinth-id/plinth/tpm/verify"
)

// LoadBootPolicies reads a measured-boot policy file: named policies, each
// a set of requirements and optional reference sets of which one must also
// match.
//
//	policy "prod" {
//	  secure_boot  = true
//	  db_forbidden = ["<sha256 of a certificate>"]
//	  dbx_contains = ["<sha256>"]
//	  reference "kernel-6.1" {
//	    boot_files      = ["<digest of the kernel>", "<of the initrd>", "<of grub.cfg>"]
//	    kernel_cmdlines = ["/vmlinuz-6.1 root=/dev/sda1 ro"]
//	  }
//	}
//
// Every problem is reported at once, with file and line, as *Errors.
func LoadBootPolicies(path string) ([]verify.Policy, error) {
	src, err := read(path, false)
	if err != nil {
		return nil, err
	}
	return ParseBootPolicies(path, src)
}

// ParseBootPolicies is LoadBootPolicies on bytes; name is used in error
// positions.
func ParseBootPolicies(name string, src []byte) ([]verify.Policy, error) {
	d, top, err := parse(name, src)
	if err != nil {
		return nil, err
	}
	var out []verify.Policy
	lines := map[string]int{}
	for _, it := range top.items {
		pos := it.Keys[0].Pos()
		if keyText(it.Keys[0]) != "policy" {
			d.errorf(pos, "unknown top-level key %q (a policy file holds policy \"name\" { … } blocks)", keyText(it.Keys[0]))
			continue
		}
		b, label, ok := labelled(d, it, "policy")
		if !ok {
			continue
		}
		if line, dup := lines[label]; dup {
			d.errorf(pos, "duplicate policy %q (first on line %d)", label, line)
			continue
		}
		lines[label] = pos.Line
		p := verify.Policy{Name: label, Requirements: requirements(b)}
		refLines := map[string]int{}
		for _, rit := range b.items {
			if keyText(rit.Keys[0]) != "reference" {
				continue
			}
			rb, rl, ok := labelled(d, rit, "reference")
			if !ok {
				continue
			}
			if line, dup := refLines[rl]; dup {
				d.errorf(rit.Keys[0].Pos(), "duplicate reference %q in policy %q (first on line %d)", rl, label, line)
				continue
			}
			refLines[rl] = rit.Keys[0].Pos().Line
			p.References = append(p.References, verify.Reference{Name: rl, Requirements: requirements(rb)})
			rb.end()
		}
		b.endLabelled("reference")
		if err := p.Validate(); err != nil {
			d.errorf(pos, "%v", err)
		}
		out = append(out, p)
	}
	if len(out) == 0 && len(d.errs) == 0 {
		d.errorf(token.Pos{Line: 1}, "the file holds no policy")
	}
	if err := d.err(); err != nil {
		return nil, err
	}
	return out, nil
}

// labelled opens a `kind "label" { … }` block.
func labelled(d *decoder, it *ast.ObjectItem, kind string) (*block, string, bool) {
	ot, isBlock := it.Val.(*ast.ObjectType)
	if len(it.Keys) != 2 || !isBlock {
		d.errorf(it.Keys[0].Pos(), `%s: want %s "name" { … }`, kind, kind)
		return nil, "", false
	}
	label := keyText(it.Keys[1])
	b := &block{d: d, where: fmt.Sprintf("%s %q", kind, label), pos: it.Keys[0].Pos(), present: true}
	if ot.List != nil {
		b.items = ot.List.Items
	}
	return b, label, true
}

// endLabelled is end for a block whose repeated labelled sub-blocks (kind)
// were read separately: they are neither duplicates nor unexpected labels.
func (b *block) endLabelled(kind string) {
	items := b.items
	b.items = slices.DeleteFunc(slices.Clone(items), func(it *ast.ObjectItem) bool { return keyText(it.Keys[0]) == kind })
	b.end()
	b.items = items
}

func requirements(b *block) verify.Requirements {
	list := func(key string) []string {
		v, _ := b.stringList(key)
		return v
	}
	r := verify.Requirements{
		PK:          verify.CertRule{Allowed: list("pk_allowed"), Forbidden: list("pk_forbidden")},
		KEK:         verify.CertRule{Allowed: list("kek_allowed"), Forbidden: list("kek_forbidden")},
		DB:          verify.CertRule{Allowed: list("db_allowed"), Forbidden: list("db_forbidden")},
		DBXContains: list("dbx_contains"),
		Firmware:    list("firmware"),
		BootApps:    list("boot_apps"),
		BootFiles:   list("boot_files"),
		Cmdlines:    list("kernel_cmdlines"),
	}
	if b.has("secure_boot") {
		v := b.boolean("secure_boot", false)
		r.SecureBoot = &v
	}
	pcrs, pos := b.stringList("pcrs")
	for i, s := range pcrs {
		f := strings.Split(s, ":")
		n, err := strconv.Atoi(safeIndex(f, 1))
		if len(f) != 3 || err != nil {
			b.d.errorf(pos[i], "pcrs: %q: want bank:index:hex, e.g. sha256:7:3d45…", s)
			continue
		}
		r.PCRs = append(r.PCRs, verify.PCRValue{Bank: f[0], Index: n, Value: f[2]})
	}
	return r
}

func safeIndex(s []string, i int) string {
	if i < len(s) {
		return s[i]
	}
	return ""
}

// FormatBootPolicy writes p in the syntax LoadBootPolicies reads.
func FormatBootPolicy(p verify.Policy) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "policy %q {\n", p.Name)
	formatRequirements(&b, "  ", p.Requirements)
	for _, r := range p.References {
		fmt.Fprintf(&b, "\n  reference %q {\n", r.Name)
		formatRequirements(&b, "    ", r.Requirements)
		b.WriteString("  }\n")
	}
	b.WriteString("}\n")
	return []byte(b.String())
}

func formatRequirements(b *strings.Builder, indent string, r verify.Requirements) {
	if r.SecureBoot != nil {
		fmt.Fprintf(b, "%ssecure_boot = %t\n", indent, *r.SecureBoot)
	}
	list := func(key string, vals []string) {
		if len(vals) == 0 {
			return
		}
		fmt.Fprintf(b, "%s%s = [\n", indent, key)
		for _, v := range vals {
			fmt.Fprintf(b, "%s  %q,\n", indent, v)
		}
		fmt.Fprintf(b, "%s]\n", indent)
	}
	list("pk_allowed", r.PK.Allowed)
	list("pk_forbidden", r.PK.Forbidden)
	list("kek_allowed", r.KEK.Allowed)
	list("kek_forbidden", r.KEK.Forbidden)
	list("db_allowed", r.DB.Allowed)
	list("db_forbidden", r.DB.Forbidden)
	list("dbx_contains", r.DBXContains)
	list("firmware", r.Firmware)
	list("boot_apps", r.BootApps)
	list("boot_files", r.BootFiles)
	list("kernel_cmdlines", r.Cmdlines)
	var pcrs []string
	for _, v := range r.PCRs {
		pcrs = append(pcrs, v.String())
	}
	list("pcrs", pcrs)
}
