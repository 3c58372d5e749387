package site

import (
	"fmt"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/meshcdn/meshcdn/internal/units"
	"github.com/meshcdn/meshcdn/node/httpcache"
)

// HeuristicConfig is a site's heuristic freshness (RFC 9111 §4.2.2): what
// a response gets that neither a rule's ttl nor the origin gives a
// freshness lifetime. In YAML it is a mapping, or "off" for none.
type HeuristicConfig struct {
	// Off turns heuristic freshness off: such responses are not stored
	// (static rules' too).
	Off bool `yaml:"-"`
	// Factor is the share of the time since the response's Last-Modified
	// it stays fresh, above 0 and at most 1. Default 0.1.
	Factor float64 `yaml:"factor"`
	// Max bounds the lifetime. Default 1d.
	Max units.Duration `yaml:"max"`
}

// MarshalYAML writes "off" for none, else the mapping.
func (h HeuristicConfig) MarshalYAML() (any, error) {
	if h.Off {
		return "off", nil
	}
	type plain HeuristicConfig
	return plain(h), nil
}

// UnmarshalYAML accepts "off" as well as a mapping.
func (h *HeuristicConfig) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		if v := strings.ToLower(n.Value); v != "off" && v != "false" {
			return fmt.Errorf("line %d: heuristic: %q is neither off nor a mapping of factor and max", n.Line, n.Value)
		}
		h.Off = true
		return nil
	}
	type plain HeuristicConfig
	return n.Decode((*plain)(h))
}

// maxHeuristicMax bounds heuristic.max: a guess is no ground for longer.
const maxHeuristicMax = 365 * 24 * time.Hour

// compileHeuristic sets the site's heuristic freshness.
func (c Config) compileHeuristic(fail func(field, format string, a ...any)) httpcache.Heuristic {
	h := httpcache.DefaultHeuristic
	switch hc := c.Heuristic; {
	case hc == nil:
	case hc.Off:
		return httpcache.Heuristic{}
	default:
		if hc.Factor != 0 {
			if hc.Factor < 0 || hc.Factor > 1 {
				fail("heuristic.factor", "%v is not above 0 and at most 1", hc.Factor)
			}
			h.Factor = hc.Factor
		}
		if hc.Max != 0 {
			if m := time.Duration(hc.Max); m < time.Second || m > maxHeuristicMax {
				fail("heuristic.max", "%v is not between 1s and 365d", m)
			}
			h.Max = time.Duration(hc.Max)
		}
	}
	return h
}
