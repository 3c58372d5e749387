package statuspage

import (
	"log/slog"
	"strings"
	"testing"
)

func f(v float64) *float64 { return &v }

func TestSparklines(t *testing.T) {
	// Rates scale to their maximum: the highest point touches the top.
	got := string(Spark([]float64{0, 5, 10}))
	if !strings.Contains(got, `points="0.0,39.0 120.0,20.0 240.0,1.0"`) || !strings.Contains(got, `aria-label="max 10.0"`) {
		t.Errorf("Spark: %s", got)
	}
	// Ratios: a gap (no requests) splits the line; a lone value is a short stroke.
	got = string(ratios([]*float64{f(1), f(0.5), nil, f(0)}))
	if strings.Count(got, "<polyline") != 2 || !strings.Contains(got, `points="0.0,1.0 80.0,20.0"`) || !strings.Contains(got, `points="200.0,39.0 240.0,39.0"`) {
		t.Errorf("ratios: %s", got)
	}
	if got := string(ratios([]*float64{nil, nil})); strings.Contains(got, "<polyline") {
		t.Errorf("no values drew a line: %s", got)
	}
}

func TestFormats(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{pct(nil), "–"}, {pct(f(0.755)), "75.5%"}, {num(1234.5), "1234"}, {num(12.34), "12.3"}, {num(0.123), "0.12"},
		{size(512), "512 B"}, {size(3 << 20), "3.00 MiB"},
	} {
		if c.got != c.want {
			t.Errorf("%q; want %q", c.got, c.want)
		}
	}
}

func TestAccessWarn(t *testing.T) {
	for _, c := range []struct {
		a       Access
		exposed bool
		want    string
	}{
		{NewAccess(true, "s"), true, "served to anyone"},
		{NewAccess(true, "s", "tok"), true, "served to anyone"},
		{NewAccess(false, "--status-token-file", "", ""), true, "refused"},
		{NewAccess(false, "s", "tok"), true, ""},
		{NewAccess(true, "s"), false, ""},
		{NewAccess(false, "s"), false, ""},
	} {
		var b strings.Builder
		c.a.Warn(slog.New(slog.NewTextHandler(&b, nil)), "10.0.0.1:9090", c.exposed)
		if got := b.String(); (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("%+v, exposed %v: logged %q; want %q", c.a, c.exposed, got, c.want)
		}
	}
	if a := NewAccess(false, "s", "", "tok", ""); len(a.Tokens) != 1 {
		t.Errorf("empty tokens kept: %q", a.Tokens)
	}
}
