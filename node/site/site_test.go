package site

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/meshcdn/meshcdn/node/httpcache"
)

func mustCompile(t *testing.T, c Config) *Site {
	t.Helper()
	s, err := c.Compile()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestClassify(t *testing.T) {
	s := mustCompile(t, Config{
		Hosts:   []string{"www.example.com"},
		Origins: []OriginConfig{{URL: "http://10.0.0.1:8080"}},
		Rules: []RuleConfig{
			{PathPrefix: "/api/", Action: "bypass"},
			{Extensions: []string{".JPG", "png"}, Action: "cache", TTL: 0, FollowOrigin: true},
			{Regex: `^/static/.*\.v[0-9]+\.js$`, Action: "cache", TTL: 86400e9},
			{PathPrefix: "/downloads/", Extensions: []string{"zip"}, Action: "bypass"},
		},
	})
	tests := []struct {
		path   string
		action Action
		rule   string
	}{
		{"/api/items.png", ActionBypass, "rules[0]"},
		{"/img/a.jpg", ActionCache, "rules[1]"},
		{"/img/A.PNG", ActionCache, "rules[1]"},
		{"/static/app.v12.js", ActionCache, "rules[2]"},
		{"/downloads/x.zip", ActionBypass, "rules[3]"},
		{"/other/x.zip", ActionCache, "default-static"},
		{"/app.css", ActionCache, "default-static"},
		{"/index.html", ActionOrigin, "default-origin"},
		{"/", ActionOrigin, "default-origin"},
	}
	for _, tt := range tests {
		r := s.Classify(tt.path)
		if r.Action != tt.action || r.Name != tt.rule {
			t.Errorf("Classify(%q) = %s %s, want %s %s", tt.path, r.Name, r.Action, tt.rule, tt.action)
		}
	}
	if p := s.Classify("/static/app.v1.js").Policy; p.TTL != 24*time.Hour || p.FollowOrigin {
		t.Errorf("rule policy %+v", p)
	}
	off := false
	s = mustCompile(t, Config{Hosts: []string{"a"}, Origins: []OriginConfig{{URL: "http://o"}}, DefaultRules: &off})
	if r := s.Classify("/a.css"); r.Action != ActionOrigin {
		t.Errorf("default_rules: false still caches css by rule %s", r.Name)
	}
}

func TestCacheKey(t *testing.T) {
	all := mustCompile(t, Config{Hosts: []string{"a"}, Origins: []OriginConfig{{URL: "http://o"}}})
	ign := mustCompile(t, Config{Hosts: []string{"a"}, Origins: []OriginConfig{{URL: "http://o"}}, CacheKey: KeyConfig{Query: "ignore"}})
	inc := mustCompile(t, Config{Hosts: []string{"a"}, Origins: []OriginConfig{{URL: "http://o"}}, CacheKey: KeyConfig{Query: "include", Params: []string{"v", "w"}}})
	exc := mustCompile(t, Config{Hosts: []string{"a"}, Origins: []OriginConfig{{URL: "http://o"}}, CacheKey: KeyConfig{Query: "exclude", Params: []string{"utm_source", "t"}}})
	tests := []struct {
		s          *Site
		host, p, q string
		want       string
	}{
		{all, "WWW.Example.com:8080", "/a.js", "b=2&a=1", "www.example.com/a.js?a=1&b=2"},
		{all, "www.example.com", "/a.js", "a=1&b=2", "www.example.com/a.js?a=1&b=2"},
		{all, "www.example.com.", "", "", "www.example.com/"},
		{all, "h", "/a", "a=2&a=1", "h/a?a=2&a=1"},
		{all, "h", "/a", "&&x=1&", "h/a?x=1"},
		{all, "[::1]:80", "/a", "", "[::1]/a"},
		{ign, "h", "/a", "v=1&x=2", "h/a"},
		{inc, "h", "/a", "x=1&w=2&v=3", "h/a?v=3&w=2"},
		{inc, "h", "/a", "x=1", "h/a"},
		{exc, "h", "/a", "utm_source=mail&id=7&t=99", "h/a?id=7"},
	}
	for _, tt := range tests {
		if got := tt.s.CacheKey(tt.host, tt.p, tt.q); got != tt.want {
			t.Errorf("CacheKey(%q, %q, %q) = %q, want %q", tt.host, tt.p, tt.q, got, tt.want)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		c    Config
		want []string
	}{
		{Config{}, []string{"hosts: at least one", "origins: at least one"}},
		{Config{Hosts: []string{"http://a.com"}, Origins: []OriginConfig{{URL: "ftp://o"}}}, []string{`hosts[0]: "http://a.com" is not a host name`, "origins[0]:", "scheme must be http or https"}},
		{Config{Hosts: []string{"a"}, Origins: []OriginConfig{{URL: "http://o?x=1"}}}, []string{"origins[0]:", "no query"}},
		{Config{Hosts: []string{"a"}, Origins: []OriginConfig{{URL: "http://o"}}, CacheKey: KeyConfig{Query: "some"}}, []string{`cache_key.query: "some" is not one of`}},
		{Config{Hosts: []string{"a"}, Origins: []OriginConfig{{URL: "http://o"}}, CacheKey: KeyConfig{Query: "include"}}, []string{"cache_key.params: query: include needs"}},
		{Config{Hosts: []string{"a"}, Origins: []OriginConfig{{URL: "http://o"}}, Rules: []RuleConfig{{Action: "cache"}}}, []string{"rules[0]: needs path_prefix, extensions or regex"}},
		{Config{Hosts: []string{"a"}, Origins: []OriginConfig{{URL: "http://o"}}, Rules: []RuleConfig{{PathPrefix: "x", Action: "store"}}}, []string{`rules[0].path_prefix: "x" must start with /`, `rules[0].action: "store" is not cache or bypass`}},
		{Config{Hosts: []string{"a"}, Origins: []OriginConfig{{URL: "http://o"}}, Rules: []RuleConfig{{}, {Regex: "(", Action: "cache"}}}, []string{"rules[0].action: required", "rules[1].regex: error parsing regexp"}},
		{Config{Hosts: []string{"a"}, Origins: []OriginConfig{{URL: "http://o"}}, Rules: []RuleConfig{{PathPrefix: "/", Action: "bypass", TTL: 5}}}, []string{"rules[0].ttl: a bypass rule stores nothing"}}, {Config{Hosts: []string{"a"}, Origins: []OriginConfig{{URL: "http://o"}}, ForwardHeaders: []string{"x-original-url", "Cookie"}}, []string{`forward_headers[1]: "Cookie" is forwarded anyway; only X-Original-Url, X-Rewrite-Url`}},
	}
	for i, tt := range tests {
		_, err := tt.c.Compile()
		if err == nil {
			t.Errorf("case %d: no error", i)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("case %d: error %q lacks %q", i, err, w)
			}
		}
	}
}

func TestSetLookup(t *testing.T) {
	a := mustCompile(t, Config{Name: "a", Hosts: []string{"a.com", "*.a.com"}, Origins: []OriginConfig{{URL: "http://o"}}})
	b := mustCompile(t, Config{Name: "b", Hosts: []string{"cdn.b.com"}, Origins: []OriginConfig{{URL: "http://o"}}})
	set, err := NewSet([]*Site{a, b}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]string{"a.com": "a", "A.COM:8080": "a", "img.a.com": "a", "x.y.a.com": "a", "cdn.b.com": "b", "b.com": "", "evil.com": ""} {
		got := ""
		if s, ok := set.Lookup(host); ok {
			got = s.Name
		}
		if got != want {
			t.Errorf("Lookup(%q) = %q, want %q", host, got, want)
		}
	}
	def, _ := url.Parse("http://origin:80")
	set, _ = NewSet([]*Site{a}, []*url.URL{def})
	if s, ok := set.Lookup("anything.example"); !ok || s.Name != "default" {
		t.Errorf("default origin site not used: %v %v", s, ok)
	}
	if _, err := NewSet([]*Site{a, a}, nil); err == nil || !strings.Contains(err.Error(), `"a.com" is already bound to site "a"`) {
		t.Errorf("duplicate host: %v", err)
	}
}

func FuzzCacheKey(f *testing.F) {
	for _, s := range []string{"a=1&b=2", "b=2&a=1", "", "&", "a", "a=1&a=2&utm=3", "%zz=1&x"} {
		f.Add("www.Example.com:8080", "/p", s)
	}
	inc, _ := Config{Hosts: []string{"h"}, Origins: []OriginConfig{{URL: "http://o"}}, CacheKey: KeyConfig{Query: "exclude", Params: []string{"utm"}}}.Compile()
	f.Fuzz(func(t *testing.T, host, p, q string) {
		k := inc.CacheKey(host, p, q)
		prefix := inc.CacheKey(host, p, "")
		if !strings.HasPrefix(k, prefix) {
			t.Fatalf("key %q does not start with host and path %q", k, prefix)
		}
		if strings.Contains(k, "utm=") && !strings.Contains(q, "utm=") {
			t.Fatalf("key %q gained utm from %q", k, q)
		}
		// The key does not depend on parameter order.
		parts := strings.Split(q, "&")
		for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
			parts[i], parts[j] = parts[j], parts[i]
		}
		rev := strings.Join(parts, "&")
		if k2 := inc.CacheKey(host, p, rev); !sameMultiset(strings.TrimPrefix(k[len(prefix):], "?"), strings.TrimPrefix(k2[len(prefix):], "?")) {
			t.Fatalf("order changed the key: %q vs %q", k, k2)
		}
	})
}

// sameMultiset compares query parts whose only difference may be the order of
// parameters that share a name (kept stable, as the client sent them).
func sameMultiset(qa, qb string) bool {
	if len(qa) != len(qb) {
		return false
	}
	count := map[string]int{}
	for _, s := range strings.Split(qa, "&") {
		count[s]++
	}
	for _, s := range strings.Split(qb, "&") {
		count[s]--
	}
	for _, c := range count {
		if c != 0 {
			return false
		}
	}
	return true
}

// TestHeuristicConfig: "heuristic: off" turns heuristic freshness off for
// every rule; a mapping sets the factor and bound of every caching rule,
// static ones keeping their floor; the default is 10% and a day.
func TestHeuristicConfig(t *testing.T) {
	for _, tt := range []struct {
		yaml   string
		static httpcache.Heuristic
		origin httpcache.Heuristic
	}{
		{"hosts: [a]\norigins: [http://o]\n", httpcache.Heuristic{Factor: 0.1, Max: 24 * time.Hour, Static: true}, httpcache.DefaultHeuristic},
		{"hosts: [a]\norigins: [http://o]\nheuristic: off\n", httpcache.Heuristic{Static: true}, httpcache.Heuristic{}},
		{"hosts: [a]\norigins: [http://o]\nheuristic: {factor: 0.2, max: 2h}\n", httpcache.Heuristic{Factor: 0.2, Max: 2 * time.Hour, Static: true}, httpcache.Heuristic{Factor: 0.2, Max: 2 * time.Hour}},
	} {
		var c Config
		if err := yaml.Unmarshal([]byte(tt.yaml), &c); err != nil {
			t.Fatal(err)
		}
		s := mustCompile(t, c)
		if got := s.Classify("/a.css").Policy.Heuristic; got != tt.static {
			t.Errorf("%q: the static rule's heuristic %+v; want %+v", tt.yaml, got, tt.static)
		}
		if got := s.Classify("/page").Policy.Heuristic; got != tt.origin {
			t.Errorf("%q: the default-origin rule's heuristic %+v; want %+v", tt.yaml, got, tt.origin)
		}
	}
}

// TestSliceSize: slice_size reads as a size; off when absent; outside
// 64KiB to 256MiB it is refused with the bounds.
func TestSliceSize(t *testing.T) {
	for _, tt := range []struct {
		yaml string
		want int64
		err  string
	}{
		{"hosts: [a]\norigins: [http://o]\n", 0, ""},
		{"hosts: [a]\norigins: [http://o]\nslice_size: 4MiB\n", 4 << 20, ""},
		{"hosts: [a]\norigins: [http://o]\nslice_size: 4KiB\n", 0, "slice_size: 4.0KiB is outside 64KiB to 256MiB"},
		{"hosts: [a]\norigins: [http://o]\nslice_size: 1GiB\n", 0, "slice_size: 1.0GiB is outside 64KiB to 256MiB"},
	} {
		var c Config
		if err := yaml.Unmarshal([]byte(tt.yaml), &c); err != nil {
			t.Fatal(err)
		}
		s, err := c.Compile()
		switch {
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("%q: error %v, want %q", tt.yaml, err, tt.err)
		case tt.err == "" && (err != nil || s.SliceSize != tt.want):
			t.Errorf("%q: slice size %d, %v; want %d", tt.yaml, s.SliceSize, err, tt.want)
		}
	}
}
