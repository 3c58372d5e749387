package main

import (
	"flag"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestFlagsDocumented: the README's table of `meshcdn edge` flags lists
// every flag the command has, each with its environment variable, and no
// flag it lacks.
func TestFlagsDocumented(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(readme), "### Flags of `meshcdn edge`")
	if !ok {
		t.Fatal("no flags section in the README")
	}
	table, _, _ = strings.Cut(table, "\n#") // up to the next heading
	row := regexp.MustCompile("(?m)^\\| `--([a-z-]+)[^|]*\\| `(MESHCDN_[A-Z_]+)`")
	documented := map[string]bool{}
	for _, m := range row.FindAllStringSubmatch(table, -1) {
		documented[m[1]] = true
		if want := "MESHCDN_" + strings.ToUpper(strings.ReplaceAll(m[1], "-", "_")); m[2] != want {
			t.Errorf("--%s is documented with %s, want %s", m[1], m[2], want)
		}
	}
	// Rows that document two flags at once ("--admin-cert FILE`, `--admin-key FILE").
	for _, m := range regexp.MustCompile("`, `--([a-z-]+)").FindAllStringSubmatch(table, -1) {
		documented[m[1]] = true
	}
	fs := flag.NewFlagSet("edge", flag.ContinueOnError)
	var f edgeFlags
	f.register(fs)
	var missing []string
	fs.VisitAll(func(fl *flag.Flag) {
		if !documented[fl.Name] {
			missing = append(missing, fl.Name)
		}
		delete(documented, fl.Name)
	})
	if len(missing) > 0 {
		t.Errorf("flags missing from the README's table: %v", missing)
	}
	var extra []string
	for name := range documented {
		extra = append(extra, name)
	}
	slices.Sort(extra)
	if len(extra) > 0 {
		t.Errorf("the README documents flags meshcdn edge lacks: %v", extra)
	}
}
