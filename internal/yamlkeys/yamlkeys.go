// Package yamlkeys finds the keys of a YAML configuration file that no
// setting takes, with messages that name the key's line, its section and
// the nearest valid key.
package yamlkeys

import (
	"fmt"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Unknown reports each key of the YAML document root that no field of
// t (through its yaml tags) takes, naming its line, its section and the
// nearest valid key: "line 3: node.memmory is not a setting (did you mean
// memory?)". The decoder's own message names Go types instead.
func Unknown(root *yaml.Node, t reflect.Type) []error {
	var errs []error
	var walk func(n *yaml.Node, t reflect.Type, path string)
	walk = func(n *yaml.Node, t reflect.Type, path string) {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		switch {
		case n.Kind == yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, t, path)
			}
		case n.Kind == yaml.SequenceNode && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array):
			for i, c := range n.Content {
				walk(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
			}
		case n.Kind == yaml.MappingNode && t.Kind() == reflect.Struct:
			fields := yamlFields(t)
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				ft, ok := fields[k.Value]
				where := strings.TrimPrefix(path+"."+k.Value, ".")
				if !ok {
					msg := fmt.Sprintf("line %d: %s is not a setting", k.Line, where)
					if near := nearest(k.Value, fields); near != "" {
						msg += fmt.Sprintf(" (did you mean %s?)", near)
					}
					errs = append(errs, fmt.Errorf("%s", msg))
					continue
				}
				walk(v, ft, where)
			}
		}
	}
	walk(root, t, "")
	return errs
}

// yamlFields maps the YAML keys of struct t to their fields' types.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for f := range t.Fields() {
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		switch {
		case name == "-":
		case strings.Contains(opts, "inline"):
			for k, v := range yamlFields(f.Type) {
				out[k] = v
			}
		case name != "":
			out[name] = f.Type
		case f.IsExported():
			out[strings.ToLower(f.Name)] = f.Type
		}
	}
	return out
}

// nearest is the key of fields closest to s, if it is close enough to be
// a typo (an edit distance of at most a third of its length, and 3).
func nearest(s string, fields map[string]reflect.Type) string {
	best, bestD := "", min(3, max(1, len(s)/3))+1
	for k := range fields {
		if d := editDistance(s, k); d < bestD || (d == bestD && k < best) {
			best, bestD = k, d
		}
	}
	if bestD > min(3, max(1, len(s)/3)) {
		return ""
	}
	return best
}

// editDistance is the number of insertions, deletions, substitutions and
// swaps of neighbours that turn a into b (optimal string alignment).
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}
