// Package units parses the sizes, durations, rates and bandwidths of
// meshcdn's configuration: "256MiB", "1.5GB", "90s", "7d", "200/s", "400Mbit".
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

// MarshalYAML writes s exactly, in the largest binary unit that divides it
// ("64MiB"), else in bytes.
func (s Size) MarshalYAML() (any, error) {
	for _, u := range []struct {
		name string
		n    Size
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if s != 0 && s%u.n == 0 {
			return strconv.FormatInt(int64(s/u.n), 10) + u.name, nil
		}
	}
	return int64(s), nil
}

// UnmarshalYAML accepts a string with a unit or a plain number of bytes.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	return unmarshalScalar(n, s, "a size such as 256MiB", ParseSize)
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

// MarshalYAML writes d as Go writes durations ("1h30m0s"), which
// ParseDuration reads back exactly.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// UnmarshalYAML accepts a duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	return unmarshalScalar(n, d, "a duration such as 10m or 7d", func(v string) (Duration, error) {
		parsed, err := ParseDuration(v)
		return Duration(parsed), err
	})
}

// Rate is a number of events per second, written with its period: "200/s",
// "12000/min", "50/h".
type Rate float64

// ParseRate parses a rate such as "200/s" or "12000/min".
func ParseRate(s string) (Rate, error) {
	num, per, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return 0, fmt.Errorf("invalid rate %q: want a number per period such as 200/s or 12000/min", s)
	}
	n, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil || n <= 0 || n > 1e9 {
		return 0, fmt.Errorf("invalid rate %q: want a positive number per period such as 200/s or 12000/min", s)
	}
	period := map[string]float64{"s": 1, "sec": 1, "second": 1, "min": 60, "minute": 60, "h": 3600, "hour": 3600}[strings.TrimSpace(per)]
	if period == 0 {
		return 0, fmt.Errorf("invalid rate %q: the period is one of s, min or h", s)
	}
	return Rate(n / period), nil
}

// MarshalYAML writes r per second ("50/s"), exactly; none (0) as null.
func (r Rate) MarshalYAML() (any, error) {
	if r == 0 {
		return nil, nil
	}
	return strconv.FormatFloat(float64(r), 'g', -1, 64) + "/s", nil
}

// UnmarshalYAML accepts a rate string.
func (r *Rate) UnmarshalYAML(n *yaml.Node) error {
	return unmarshalScalar(n, r, "a rate such as 200/s", ParseRate)
}

// Bandwidth is a number of bytes per second, written in bits ("400Mbit",
// "400Mbps", "1Gbit") or bytes ("50MB", "64MiB"), with an optional "/s".
type Bandwidth float64

// ParseBandwidth parses a bandwidth such as "400Mbit" or "50MB/s".
func ParseBandwidth(s string) (Bandwidth, error) {
	v := strings.TrimSuffix(strings.TrimSpace(s), "/s")
	bits := false
	for _, unit := range []string{"bit", "bps"} {
		if n, ok := strings.CutSuffix(v, unit); ok {
			v, bits = n+"B", true
			break
		}
	}
	n, err := humanize.ParseBytes(v)
	if err != nil || n == 0 || n > 1<<50 {
		return 0, fmt.Errorf("invalid bandwidth %q: want a positive number of bits or bytes a second such as 400Mbit, 1Gbit or 50MB", s)
	}
	if bits {
		return Bandwidth(n) / 8, nil
	}
	return Bandwidth(n), nil
}

// MarshalYAML writes b exactly: in bytes a second ("4000000B/s") when it is a
// whole number of them, else in bits ("1bit", what only a bit rate makes);
// none (0) as null.
func (b Bandwidth) MarshalYAML() (any, error) {
	if b == 0 {
		return nil, nil
	}
	if b == Bandwidth(int64(b)) {
		return strconv.FormatInt(int64(b), 10) + "B/s", nil
	}
	return strconv.FormatInt(int64(b*8), 10) + "bit", nil
}

// UnmarshalYAML accepts a bandwidth string.
func (b *Bandwidth) UnmarshalYAML(n *yaml.Node) error {
	return unmarshalScalar(n, b, "a bandwidth such as 400Mbit", ParseBandwidth)
}

// unmarshalScalar sets *dst to the value of the scalar node n, parsed;
// errors name the line and what was wanted.
func unmarshalScalar[T any](n *yaml.Node, dst *T, want string, parse func(string) (T, error)) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want %s", n.Line, want)
	}
	v, err := parse(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*dst = v
	return nil
}
