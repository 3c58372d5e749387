// Package units parses the sizes and durations of meshcdn's configuration:
// "256MiB", "1.5GB", "90s", "7d".
package units

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"go.yaml.in/yaml/v3"
)

// Size is a byte count written with an optional unit (B, KB, KiB, MB, MiB, ...).
type Size int64

// ParseSize parses a size such as "256MiB", "64MB" or "1048576".
func ParseSize(s string) (Size, error) {
	n, err := humanize.ParseBytes(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("invalid size %q: want a number with an optional unit such as 64KiB, 256MiB or 1GB", s)
	}
	if n > 1<<62 {
		return 0, fmt.Errorf("invalid size %q: too large", s)
	}
	return Size(n), nil
}

// String formats s in IEC units.
func (s Size) String() string { return strings.ReplaceAll(humanize.IBytes(uint64(s)), " ", "") }

// Set implements flag.Value.
func (s *Size) Set(v string) error {
	n, err := ParseSize(v)
	if err != nil {
		return err
	}
	*s = n
	return nil
}

// UnmarshalYAML accepts a string with a unit or a plain number of bytes.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a size such as 256MiB", n.Line)
	}
	v, err := ParseSize(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*s = v
	return nil
}

// Duration is a time.Duration that also takes whole days ("7d").
type Duration time.Duration

// ParseDuration parses Go durations ("90s", "1h30m") and days ("7d", "1d12h").
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	var days time.Duration
	if i := strings.IndexByte(s, 'd'); i > 0 {
		n, err := strconv.ParseUint(s[:i], 10, 32)
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q", s)
		}
		days, s = time.Duration(n)*24*time.Hour, s[i+1:]
		if s == "" {
			return days, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q: want e.g. 30s, 10m, 12h or 7d", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("invalid duration %q: negative", s)
	}
	return days + d, nil
}

// UnmarshalYAML accepts a duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a duration such as 10m or 7d", n.Line)
	}
	v, err := ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = Duration(v)
	return nil
}
