package main

import (
	"flag"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestFlagsDocumented: the README's tables of `meshcdn edge` and `meshcdn
// router` flags list every flag the command has, each with its environment
// variable, and no flag it lacks.
func TestFlagsDocumented(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var edge edgeFlags
	var router routerFlags
	for _, c := range []struct {
		command  string
		register func(*flag.FlagSet)
	}{{"edge", edge.register}, {"router", router.register}} {
		_, table, ok := strings.Cut(string(readme), "### Flags of `meshcdn "+c.command+"`")
		if !ok {
			t.Fatalf("no flags section for meshcdn %s in the README", c.command)
		}
		table, _, _ = strings.Cut(table, "\n#") // up to the next heading
		row := regexp.MustCompile("(?m)^\\| `--([a-z0-9-]+)[^|]*\\| `(MESHCDN_[A-Z0-9_]+)`")
		documented := map[string]bool{}
		for _, m := range row.FindAllStringSubmatch(table, -1) {
			documented[m[1]] = true
			if want := "MESHCDN_" + strings.ToUpper(strings.ReplaceAll(m[1], "-", "_")); m[2] != want {
				t.Errorf("meshcdn %s: --%s is documented with %s, want %s", c.command, m[1], m[2], want)
			}
		}
		// Rows that document two flags at once ("--admin-cert FILE`, `--admin-key FILE").
		for _, m := range regexp.MustCompile("`, `--([a-z0-9-]+)").FindAllStringSubmatch(table, -1) {
			documented[m[1]] = true
		}
		fs := flag.NewFlagSet(c.command, flag.ContinueOnError)
		c.register(fs)
		var missing []string
		fs.VisitAll(func(fl *flag.Flag) {
			if !documented[fl.Name] {
				missing = append(missing, fl.Name)
			}
			delete(documented, fl.Name)
		})
		if len(missing) > 0 {
			t.Errorf("flags of meshcdn %s missing from the README's table: %v", c.command, missing)
		}
		var extra []string
		for name := range documented {
			extra = append(extra, name)
		}
		slices.Sort(extra)
		if len(extra) > 0 {
			t.Errorf("the README documents flags meshcdn %s lacks: %v", c.command, extra)
		}
	}
}

// TestREADMEShape: every make target the README names exists, and every
// table renders as one table: a header, its separator, rows of the header's
// width, a blank line after it (text right after the last row would render
// as one more row; a blank line inside one splits it in two).
func TestREADMEShape(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	makefile, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	targets := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^([a-z0-9-]+):`).FindAllStringSubmatch(string(makefile), -1) {
		targets[m[1]] = true
	}
	lines := strings.Split(string(readme), "\n")
	inline, command := regexp.MustCompile("`make ([a-z0-9-]+)"), regexp.MustCompile(`(?:^|&& |; )make ([a-z0-9-]+)`)
	inCode := false
	for i := 0; i < len(lines); i++ {
		if strings.HasPrefix(lines[i], "```") {
			inCode = !inCode
		}
		named := inline.FindAllStringSubmatch(lines[i], -1)
		if inCode {
			named = command.FindAllStringSubmatch(lines[i], -1)
		}
		for _, m := range named {
			if !targets[m[1]] {
				t.Errorf("README line %d names `make %s`, which the Makefile lacks", i+1, m[1])
			}
		}
		if inCode || !strings.HasPrefix(lines[i], "|") {
			continue
		}
		start, width := i+1, cells(lines[i])
		if i+1 >= len(lines) || !regexp.MustCompile(`^\|(\s*:?-+:?\s*\|)+$`).MatchString(lines[i+1]) {
			t.Errorf("README line %d: a table row without a header and separator above it: %q", start, lines[i])
		}
		for i++; i < len(lines) && strings.HasPrefix(lines[i], "|"); i++ {
			if n := cells(lines[i]); n != width {
				t.Errorf("README line %d: %d cells in a table of %d: %q", i+1, n, width, lines[i])
			}
		}
		if i < len(lines) && lines[i] != "" {
			t.Errorf("README line %d: text right after the table of line %d renders as a row: %q", i+1, start, lines[i])
		}
		i--
	}
}

// cells counts the cells of a markdown table row: the pipes outside code
// spans and not escaped, less one.
func cells(row string) int {
	n, code := 0, false
	for i := 0; i < len(row); i++ {
		switch {
		case row[i] == '`':
			code = !code
		case row[i] == '\\' && !code:
			i++
		case row[i] == '|' && !code:
			n++
		}
	}
	return n - 1
}
