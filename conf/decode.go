package conf

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/hcl/ast"
	"github.com/hashicorp/hcl/hcl/parser"
	hclstrconv "github.com/hashicorp/hcl/hcl/strconv"
	"github.com/hashicorp/hcl/hcl/token"
)

// read returns the content of the file at path, with $VAR and ${VAR}
// replaced by the environment when expandEnv is set (as SPIRE's -expandEnv:
// the whole text, comments included; unset variables become "").
func read(path string, expandEnv bool) ([]byte, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("conf: %w", err)
	}
	if expandEnv {
		src = []byte(os.ExpandEnv(string(src)))
	}
	return src, nil
}

// decoder walks one parsed file and collects every problem it finds.
type decoder struct {
	file string
	errs []posError
}

// posError is a problem and where it is, to the column, for sorting.
type posError struct {
	pos token.Pos
	msg string
}

// parse parses src as HCL v1 and returns the file's top level as a block.
// A syntax error stops everything: HCL v1 reports only the first one.
func parse(name string, src []byte) (*decoder, *block, error) {
	f, err := parseHCL(src)
	if err != nil {
		line, msg := 1, err.Error()
		var pe *parser.PosError
		if errors.As(err, &pe) {
			line, msg = max(pe.Pos.Line, 1), pe.Err.Error()
		}
		return nil, nil, &Errors{List: []Error{{Pos: Pos{File: name, Line: line}, Msg: "syntax error: " + msg}}}
	}
	d := &decoder{file: name}
	top := &block{d: d, pos: token.Pos{Line: 1}}
	if list, ok := f.Node.(*ast.ObjectList); ok {
		top.items = list.Items
	}
	return d, top, nil
}

// parseHCL runs the HCL parser, turning a panic inside it into an error: a
// configuration file must never crash the process that reads it.
func parseHCL(src []byte) (f *ast.File, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("the HCL parser failed: %v", r)
		}
	}()
	return parser.Parse(src)
}

func (d *decoder) errorf(p token.Pos, format string, args ...any) {
	d.errs = append(d.errs, posError{p, fmt.Sprintf(format, args...)})
}

// err returns the problems found, in the order they appear in the file, or nil.
func (d *decoder) err() error {
	if len(d.errs) == 0 {
		return nil
	}
	slices.SortStableFunc(d.errs, func(a, b posError) int {
		return cmp.Or(cmp.Compare(a.pos.Line, b.pos.Line), cmp.Compare(a.pos.Column, b.pos.Column))
	})
	list := make([]Error, len(d.errs))
	for i, e := range d.errs {
		list[i] = Error{Pos: Pos{File: d.file, Line: max(e.pos.Line, 1)}, Msg: e.msg}
	}
	return &Errors{List: list}
}

// block is one HCL object being decoded. The decoding code asks for each key
// it knows with the typed getters below, then calls end, which reports every
// key nobody asked for. Getters report wrong types and bad values, and
// return the default instead; an empty string counts as not set, as in SPIRE.
type block struct {
	d     *decoder
	where string    // how messages name the block: "server block"; "" at top level
	pos   token.Pos // where missing keys are reported: the block's key, or line 1
	items []*ast.ObjectItem
	// present is set when the block is written in the file.
	present bool
	// quiet silences missing-key errors: the block itself is missing or
	// malformed, which was reported once already.
	quiet bool
	known []string // keys asked for, for end and its suggestions
}

// lookup returns the first item written for key, or nil, and records that
// key as known.
func (b *block) lookup(key string) *ast.ObjectItem {
	b.known = append(b.known, key)
	for _, it := range b.items {
		if keyText(it.Keys[0]) == key {
			return it
		}
	}
	return nil
}

// has reports whether key is written, and records it as known.
func (b *block) has(key string) bool { return b.lookup(key) != nil }

// value returns the value written for key, or nil.
func (b *block) value(key string) ast.Node {
	if it := b.lookup(key); it != nil {
		return it.Val
	}
	return nil
}

// end reports the keys nobody asked for, keys written twice, and labels
// where none belong.
func (b *block) end() {
	firstLine := map[string]int{}
	for _, it := range b.items {
		key, pos := keyText(it.Keys[0]), it.Keys[0].Pos()
		if !slices.Contains(b.known, key) {
			if b.where == "" {
				b.d.errorf(pos, "unknown top-level key %q%s", key, suggest(key, b.known))
			} else {
				b.d.errorf(pos, "unknown key %q in %s%s", key, b.where, suggest(key, b.known))
			}
			continue
		}
		if line, dup := firstLine[key]; dup {
			b.d.errorf(pos, "duplicate key %q (first set on line %d)", key, line)
			continue
		}
		firstLine[key] = pos.Line
		if len(it.Keys) > 1 {
			b.d.errorf(it.Keys[1].Pos(), "%s: unexpected label %q", key, keyText(it.Keys[1]))
		}
	}
}

// missing reports that key is required in b.
func (b *block) missing(key string) {
	if !b.quiet {
		b.d.errorf(b.pos, "missing required key %q in %s", key, b.where)
	}
}

// object returns the block written for key. When there is none, it returns
// an empty block that reports its missing keys at b's position, so that
// defaults and required keys work the same either way.
func (b *block) object(key, where string) *block {
	sub := &block{d: b.d, where: where, pos: b.pos, quiet: b.quiet}
	it := b.lookup(key)
	if it == nil {
		return sub
	}
	ot, ok := it.Val.(*ast.ObjectType)
	if !ok {
		b.d.errorf(it.Val.Pos(), "%s: want a block, got %s", key, kindOf(it.Val))
		sub.quiet = true
		return sub
	}
	sub.pos, sub.present = it.Keys[0].Pos(), true
	if ot.List != nil {
		sub.items = ot.List.Items
	}
	return sub
}

// requiredObject is object for a block that must be written.
func (b *block) requiredObject(key, where string) *block {
	sub := b.object(key, where)
	if !sub.present && !sub.quiet {
		b.d.errorf(b.pos, "missing %s", where)
		sub.quiet = true
	}
	return sub
}

// str returns the string written for key; ok is false when the key is not
// written or is not a string (reported).
func (b *block) str(key string) (s string, pos token.Pos, ok bool) {
	v := b.value(key)
	if v == nil {
		return "", token.Pos{}, false
	}
	s, ok = b.d.stringValue(key, v)
	return s, v.Pos(), ok
}

// string returns the string written for key, or def.
func (b *block) string(key, def string) string {
	if s, _, ok := b.str(key); ok && s != "" {
		return s
	}
	return def
}

// required returns the string written for key, reporting it when it is
// missing or empty.
func (b *block) required(key string) (s string, pos token.Pos, ok bool) {
	v := b.value(key)
	if v == nil {
		b.missing(key)
		return "", token.Pos{}, false
	}
	s, ok = b.d.stringValue(key, v)
	if ok && s == "" {
		b.d.errorf(v.Pos(), "%s: must not be empty", key)
		ok = false
	}
	return s, v.Pos(), ok
}

// requiredString is required without the position.
func (b *block) requiredString(key string) string {
	s, _, _ := b.required(key)
	return s
}

// boolean returns the bool written for key, or def.
func (b *block) boolean(key string, def bool) bool {
	v := b.value(key)
	if v == nil {
		return def
	}
	if lit, ok := v.(*ast.LiteralType); ok && lit.Token.Type == token.BOOL {
		return lit.Token.Text == "true"
	}
	b.d.errorf(v.Pos(), "%s: want true or false, got %s", key, kindOf(v))
	return def
}

// integer returns the whole number written for key, as a number or as a
// string holding one (SPIRE accepts both), or def.
func (b *block) integer(key string, def int64) int64 {
	if n, _, ok := b.intValue(key); ok {
		return n
	}
	return def
}

// port returns the TCP port written for key, or def.
func (b *block) port(key string, def int) int {
	n, pos, ok := b.intValue(key)
	if !ok {
		return def
	}
	if n < 1 || n > 65535 {
		b.d.errorf(pos, "%s: port %d is out of range (1-65535)", key, n)
		return def
	}
	return int(n)
}

// intValue returns the whole number written for key; ok is false when the
// key is not written, is empty, or is not a whole number (reported).
func (b *block) intValue(key string) (n int64, pos token.Pos, ok bool) {
	v := b.value(key)
	if v == nil {
		return 0, pos, false
	}
	pos = v.Pos()
	lit, ok := v.(*ast.LiteralType)
	if !ok || lit.Token.Type == token.BOOL {
		b.d.errorf(pos, "%s: want a number, got %s", key, kindOf(v))
		return 0, pos, false
	}
	var err error
	switch lit.Token.Type {
	case token.NUMBER:
		n, err = strconv.ParseInt(lit.Token.Text, 0, 64) // HCL allows 0x1f and 017
	case token.FLOAT:
		b.d.errorf(pos, "%s: %s is not a whole number", key, lit.Token.Text)
		return 0, pos, false
	default: // a string
		s, ok := b.d.stringValue(key, v)
		if !ok || s == "" {
			return 0, pos, false
		}
		n, err = strconv.ParseInt(s, 10, 64)
	}
	switch {
	case errors.Is(err, strconv.ErrRange):
		b.d.errorf(pos, "%s: %s is out of range", key, lit.Token.Text)
		return 0, pos, false
	case err != nil:
		b.d.errorf(pos, "%s: %s is not a number", key, lit.Token.Text)
		return 0, pos, false
	}
	return n, pos, true
}

// duration returns the duration written for key ("24h", "90m"), or def.
// Negative durations are refused, and so is zero unless def is zero (zero
// then means "not set, use the built-in default").
func (b *block) duration(key string, def time.Duration) time.Duration {
	s, pos, ok := b.str(key)
	if !ok || s == "" {
		return def
	}
	t, err := time.ParseDuration(s)
	switch {
	case err != nil:
		b.d.errorf(pos, `%s: %q is not a duration (write it like "24h", "90m" or "30s")`, key, s)
		return def
	case t < 0 || (t == 0 && def != 0):
		b.d.errorf(pos, "%s: must be positive", key)
		return def
	}
	return t
}

// stringList returns the strings of the list written for key, and where
// each one is written.
func (b *block) stringList(key string) ([]string, []token.Pos) {
	v := b.value(key)
	if v == nil {
		return nil, nil
	}
	list, ok := v.(*ast.ListType)
	if !ok {
		b.d.errorf(v.Pos(), "%s: want a list of strings, got %s", key, kindOf(v))
		return nil, nil
	}
	var vals []string
	var pos []token.Pos
	for i, n := range list.List {
		if s, ok := b.d.stringValue(fmt.Sprintf("%s[%d]", key, i), n); ok {
			vals = append(vals, s)
			pos = append(pos, n.Pos())
		}
	}
	return vals, pos
}

// objects returns the sub-blocks of the block written for key, by their
// names: `tenants { "<id>" { … } }`. The caller ends each sub-block.
func (b *block) objects(key, where string) map[string]*block {
	outer := b.object(key, where)
	out := map[string]*block{}
	for _, it := range outer.items {
		name := keyText(it.Keys[0])
		ot, ok := it.Val.(*ast.ObjectType)
		if !ok {
			b.d.errorf(it.Val.Pos(), "%s %q: want a block, got %s", key, name, kindOf(it.Val))
			continue
		}
		sub := &block{d: b.d, where: fmt.Sprintf("%s %q", where, name), pos: it.Keys[0].Pos(), present: true}
		if ot.List != nil {
			sub.items = ot.List.Items
		}
		out[name] = sub
	}
	return out
}

// intList returns the whole numbers of the list written for key, and where
// each one is written; pos is nil when the key is not written.
func (b *block) intList(key string) ([]int64, []token.Pos) {
	v := b.value(key)
	if v == nil {
		return nil, nil
	}
	list, ok := v.(*ast.ListType)
	if !ok {
		b.d.errorf(v.Pos(), "%s: want a list of numbers, got %s", key, kindOf(v))
		return nil, []token.Pos{}
	}
	vals, pos := []int64{}, []token.Pos{}
	for _, n := range list.List {
		lit, ok := n.(*ast.LiteralType)
		if !ok || lit.Token.Type != token.NUMBER {
			b.d.errorf(n.Pos(), "%s: want a whole number, got %s", key, kindOf(n))
			continue
		}
		x, err := strconv.ParseInt(lit.Token.Text, 0, 64)
		if err != nil {
			b.d.errorf(n.Pos(), "%s: %s is not a whole number", key, lit.Token.Text)
			continue
		}
		vals, pos = append(vals, x), append(pos, n.Pos())
	}
	return vals, pos
}

// stringValue returns the string literal n, reporting anything else.
func (d *decoder) stringValue(key string, n ast.Node) (string, bool) {
	if lit, ok := n.(*ast.LiteralType); ok {
		switch lit.Token.Type {
		case token.STRING:
			s, err := hclstrconv.Unquote(lit.Token.Text)
			if err != nil {
				d.errorf(n.Pos(), "%s: bad string %s", key, lit.Token.Text)
				return "", false
			}
			return s, true
		case token.HEREDOC:
			s, ok := heredoc(lit.Token)
			if !ok {
				d.errorf(n.Pos(), "%s: bad heredoc string", key)
			}
			return s, ok
		}
	}
	d.errorf(n.Pos(), "%s: want a string, got %s", key, kindOf(n))
	return "", false
}

// heredoc returns the text of a <<EOF string. HCL's own unindenting slices
// the token text by assumption, so a panic there is caught.
func heredoc(t token.Token) (s string, ok bool) {
	defer func() {
		if recover() != nil {
			s, ok = "", false
		}
	}()
	s, ok = t.Value().(string)
	return s, ok
}

// keyText returns a key as written, without quotes.
func keyText(k *ast.ObjectKey) string {
	if k.Token.Type == token.STRING {
		if s, err := hclstrconv.Unquote(k.Token.Text); err == nil {
			return s
		}
	}
	return k.Token.Text
}

// kindOf names the type of a value for messages.
func kindOf(n ast.Node) string {
	switch n := n.(type) {
	case *ast.LiteralType:
		switch n.Token.Type {
		case token.NUMBER, token.FLOAT:
			return "a number"
		case token.BOOL:
			return "a bool"
		case token.STRING, token.HEREDOC:
			return "a string"
		}
	case *ast.ListType:
		return "a list"
	case *ast.ObjectType:
		return "a block"
	}
	return fmt.Sprintf("%T", n)
}

// suggest returns ` (did you mean "x"?)` for the known key closest to key,
// or "" when none is close. Case differences count as close.
func suggest(key string, known []string) string {
	best, bestDist := "", 2+len(key)/5 // at most 1 edit, plus 1 for every 5 bytes
	for _, k := range known {
		if d := editDistance(strings.ToLower(key), strings.ToLower(k)); d < bestDist {
			best, bestDist = k, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
