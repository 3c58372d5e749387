package units

import (
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]Size{"256MiB": 256 << 20, "1GB": 1e9, "64KiB": 64 << 10, "1048576": 1 << 20, " 2 MiB ": 2 << 20} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "lots", "-5MiB", "1XB"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) accepted", in)
		}
	}
	if s := Size(256 << 20).String(); s != "256MiB" {
		t.Errorf("String = %q", s)
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{"90s": 90 * time.Second, "7d": 7 * 24 * time.Hour, "1d12h": 36 * time.Hour, "10m": 10 * time.Minute} {
		if got, err := ParseDuration(in); err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "soon", "-1s", "xd", "5", "1d-1h"} {
		if _, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) accepted", in)
		}
	}
}

// parses checks that parse gives each of good's values and refuses bad.
func parses[T comparable](t *testing.T, name string, parse func(string) (T, error), good map[string]T, bad []string) {
	t.Helper()
	for in, want := range good {
		if got, err := parse(in); err != nil || got != want {
			t.Errorf("%s(%q) = %v, %v; want %v", name, in, got, err, want)
		}
	}
	for _, in := range bad {
		if _, err := parse(in); err == nil {
			t.Errorf("%s(%q) accepted", name, in)
		}
	}
}

func TestParseRate(t *testing.T) {
	parses(t, "ParseRate", ParseRate, map[string]Rate{"200/s": 200, "12000/min": 200, " 36 / h ": 0.01, "0.5/s": 0.5},
		[]string{"", "200", "-5/s", "0/s", "5/day", "many/s"})
}

func TestParseBandwidth(t *testing.T) {
	parses(t, "ParseBandwidth", ParseBandwidth,
		map[string]Bandwidth{"400Mbit": 50e6, "1Gbit": 125e6, "50MB": 50e6, "64MiB/s": 64 << 20, "8kbit/s": 1e3, "400Mbps": 50e6},
		[]string{"", "fast", "0Mbit", "-1MB", "400Mbit/h"})
}

func TestUnmarshalYAML(t *testing.T) {
	var c struct {
		Size      Size      `yaml:"size"`
		TTL       Duration  `yaml:"ttl"`
		Rate      Rate      `yaml:"rate"`
		Bandwidth Bandwidth `yaml:"bandwidth"`
	}
	if err := yaml.Unmarshal([]byte("size: 4MiB\nttl: 1d\nrate: 120/min\nbandwidth: 8Mbit\n"), &c); err != nil {
		t.Fatal(err)
	}
	if c.Size != 4<<20 || time.Duration(c.TTL) != 24*time.Hour || c.Rate != 2 || c.Bandwidth != 1e6 {
		t.Errorf("%+v", c)
	}
	err := yaml.Unmarshal([]byte("size: 1\nrate: [1]\n"), &c)
	if err == nil || !strings.Contains(err.Error(), "line 2: want a rate such as 200/s") {
		t.Errorf("a list for a rate: %v", err)
	}
}

// TestMarshalYAMLRoundTrip: every value written is read back exactly, in
// a form a person writes (units, not nanoseconds).
func TestMarshalYAMLRoundTrip(t *testing.T) {
	type values struct {
		Size      Size      `yaml:"size"`
		TTL       Duration  `yaml:"ttl"`
		Rate      Rate      `yaml:"rate"`
		Bandwidth Bandwidth `yaml:"bandwidth"`
	}
	for _, in := range []string{
		"size: 4MiB\nttl: 1d\nrate: 120/min\nbandwidth: 8Mbit\n",
		"size: 1000\nttl: 90s\nrate: 1/h\nbandwidth: 1bit\n",
		"size: 1.5GB\nttl: 1d12h30m\nrate: 0.5/s\nbandwidth: 50MB/s\n",
		"size: 0\nttl: 0s\n",
	} {
		var v values
		if err := yaml.Unmarshal([]byte(in), &v); err != nil {
			t.Fatal(err)
		}
		out, err := yaml.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		var back values
		if err := yaml.Unmarshal(out, &back); err != nil {
			t.Fatalf("%q read back from %q: %v", out, in, err)
		}
		if back != v {
			t.Errorf("%q became %q: %+v, want %+v", in, out, back, v)
		}
	}
	out, _ := yaml.Marshal(values{Size: 64 << 20, TTL: Duration(10 * time.Minute), Rate: 50, Bandwidth: 4e6})
	if want := "size: 64MiB\nttl: 10m0s\nrate: 50/s\nbandwidth: 4000000B/s\n"; string(out) != want {
		t.Errorf("written as %q; want %q", out, want)
	}
}
