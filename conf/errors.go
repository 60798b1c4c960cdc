package conf

import (
	"fmt"
	"strings"
)

// Pos is a line of a configuration file.
type Pos struct {
	File string // the name given to Parse*, or the path given to Load*
	Line int    // 1-based
}

// String returns "file:line".
func (p Pos) String() string { return fmt.Sprintf("%s:%d", p.File, p.Line) }

// Error is one problem in a configuration file.
type Error struct {
	Pos Pos
	Msg string
}

// Error returns "file:line: message".
func (e Error) Error() string { return e.Pos.String() + ": " + e.Msg }

// Errors is every problem found in one configuration file, in line order.
// Parse* and Load* return it (as *Errors) for any problem in the file's
// content; only a file that cannot be read gives another error.
type Errors struct {
	List []Error
}

// Error returns one "file:line: message" line per problem.
func (e *Errors) Error() string {
	lines := make([]string, len(e.List))
	for i, err := range e.List {
		lines[i] = err.Error()
	}
	return strings.Join(lines, "\n")
}
