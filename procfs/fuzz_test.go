package procfs

import (
	"bytes"
	"testing"
)

// FuzzParseStartTime feeds arbitrary bytes to the stat parser: it must not
// panic, and whatever it accepts must have a (command name).
func FuzzParseStartTime(f *testing.F) {
	for _, s := range []string{
		statLine(5512, "cat", 35697),
		statLine(7, "a) (b c", 43),
		statLine(7, ")", 45),
		statLine(7, "x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 99 (", 44),
		"1 (init) S 0 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5",
		"1 (init) S 0 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0",
		"",
		"()",
		")(",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, stat []byte) {
		if _, err := parseStartTime(stat); err == nil {
			open, end := bytes.IndexByte(stat, '('), bytes.LastIndexByte(stat, ')')
			if open < 0 || end < open {
				t.Fatalf("accepted %q without a (command name)", stat)
			}
		}
	})
}

// FuzzParseStartTimeComm checks that no command name a process can choose
// changes the start time the parser reads.
func FuzzParseStartTimeComm(f *testing.F) {
	for _, s := range []string{"cat", "a) (b c", ")", "(", ") 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22", "tab\there", "new\nline", ""} {
		f.Add(s, uint64(35697))
	}
	f.Fuzz(func(t *testing.T, comm string, start uint64) {
		got, err := parseStartTime([]byte(statLine(42, comm, start)))
		if err != nil {
			t.Fatalf("comm %q: %v", comm, err)
		}
		if got != start {
			t.Fatalf("comm %q: start time = %d, want %d", comm, got, start)
		}
	})
}
