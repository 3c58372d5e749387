package access

import (
	"encoding/hex"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/internal/units"
)

const key = "aliyuncdnexp1234"

func policy(t *testing.T, c Config) *Policy {
	t.Helper()
	p, err := c.Compile()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// check decides a request for rawURL at now from 127.0.0.1.
func check(p *Policy, rawURL string, now time.Time, hdr ...string) Decision {
	u, err := url.Parse(rawURL)
	if err != nil {
		panic(err)
	}
	h := http.Header{}
	for i := 0; i+1 < len(hdr); i += 2 {
		h.Set(hdr[i], hdr[i+1])
	}
	return p.Check(&Request{Path: u.EscapedPath(), RawQuery: u.RawQuery, Remote: netip.MustParseAddr("127.0.0.1"), Header: h, Now: now})
}

// TestURLAuthVectors: each type against a signature computed outside the
// code (md5sum of the documented string, and Alibaba Cloud CDN's own
// examples for A, B and C); a valid URL comes back clean; a wrong hash, a
// time past the TTL and no signature are refused with their reasons; the
// backup key is accepted.
func TestURLAuthVectors(t *testing.T) {
	a1444 := time.Unix(1444435200, 0)
	at55 := time.Unix(0x55CE8100, 0)
	b0800 := time.Date(2015, 8, 15, 8, 0, 0, 0, utc8)
	for _, tt := range []struct {
		name     string
		cfg      URLAuthConfig
		signed   string // valid at its time
		signedAt time.Time
		clean    string
		wrong    string // a wrong hash
		missing  string
	}{
		{"A", URLAuthConfig{Type: "A", Key: key},
			"/video/standard/1K.html?auth_key=1444435200-0-0-80cd3862d699b7118eed99103f2a3a4f&x=1", a1444, "/video/standard/1K.html?x=1",
			"/video/standard/1K.html?auth_key=1444435200-0-0-80cd3862d699b7118eed99103f2a3a4e", "/video/standard/1K.html?x=1"},
		{"B", URLAuthConfig{Type: "B", Key: key},
			"/201508150800/9044548ef1527deadafa49a890a377f0/4/44/44c0909bcfc20a01afaf256ca99a8b8b.mp3", b0800, "/4/44/44c0909bcfc20a01afaf256ca99a8b8b.mp3",
			"/201508150801/9044548ef1527deadafa49a890a377f0/4/44/44c0909bcfc20a01afaf256ca99a8b8b.mp3", "/4/44/44c0909bcfc20a01afaf256ca99a8b8b.mp3"},
		{"C path", URLAuthConfig{Type: "C", Key: key},
			"/a37fa50a5fb8f71214b1e7c95ec7a1bd/55CE8100/test.flv", at55, "/test.flv",
			"/a37fa50a5fb8f71214b1e7c95ec7a1bd/55CE8101/test.flv", "/test.flv"},
		{"C query", URLAuthConfig{Type: "C", Key: key, Param: "KEY1", TimeParam: "KEY2"},
			"/test.flv?KEY1=a37fa50a5fb8f71214b1e7c95ec7a1bd&KEY2=55CE8100", at55, "/test.flv",
			"/test.flv?KEY1=a37fa50a5fb8f71214b1e7c95ec7a1bd&KEY2=55ce8100", "/test.flv?KEY2=55CE8100"},
		{"F", URLAuthConfig{Type: "F", Key: key},
			"/test.flv?sign=aae536018b61343f2ce91fe2926a34a6&time=1439596800", at55, "/test.flv",
			"/test.flv?sign=aae536018b61343f2ce91fe2926a34a6&time=1439596801", "/test.flv?time=1439596800"},
		{"F hex, other names", URLAuthConfig{Type: "F", Key: key, Param: "s", TimeParam: "t", TimeFormat: "hex"},
			"/test.flv?t=55CE8100&s=a37fa50a5fb8f71214b1e7c95ec7a1bd", at55, "/test.flv",
			"/test.flv?t=55CE8100&s=a37fa50a5fb8f71214b1e7c95ec7a1bc", "/test.flv?t=55CE8100"},
		{"F backup key", URLAuthConfig{Type: "F", Key: "another-key-0000", BackupKey: "backupkey5678901"},
			"/test.flv?sign=f7e0dc440a45d33b233587ed77514a44&time=1439596800", at55, "/test.flv",
			"/test.flv?sign=aae536018b61343f2ce91fe2926a34a6&time=1439596800", "/test.flv"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := policy(t, Config{URLAuth: &tt.cfg})
			d := check(p, tt.signed, tt.signedAt.Add(29*time.Minute))
			if d.Reason != "" || !d.Signed {
				t.Fatalf("valid: %+v", d)
			}
			clean := d.Path
			if d.RawQuery != "" {
				clean += "?" + d.RawQuery
			}
			if clean != tt.clean {
				t.Errorf("clean URL %q; want %q", clean, tt.clean)
			}
			if d := check(p, tt.signed, tt.signedAt.Add(31*time.Minute)); d.Reason != AuthExpired || d.Status != 403 {
				t.Errorf("past the TTL: %+v", d)
			}
			if d := check(p, tt.wrong, tt.signedAt); d.Reason != AuthMismatch {
				t.Errorf("wrong hash: %+v", d)
			}
			if d := check(p, tt.missing, tt.signedAt); d.Reason != AuthMissing {
				t.Errorf("no signature: %+v", d)
			}
			// A signing parameter twice, after a valid signature or before it,
			// also percent-encoded: refused, so no second one reaches the
			// cache key or the origin.
			if u, _ := url.Parse(tt.signed); u.RawQuery != "" {
				first, _, _ := strings.Cut(u.RawQuery, "=")
				enc := strings.Replace(first, first[:1], "%"+strings.ToUpper(hex.EncodeToString([]byte(first[:1]))), 1)
				for _, dup := range []string{tt.signed + "&" + first + "=x", u.Path + "?" + first + "=x&" + u.RawQuery, tt.signed + "&" + enc + "=y"} {
					if d := check(p, dup, tt.signedAt); d.Reason != AuthDuplicate || d.Status != 403 {
						t.Errorf("%s: %+v; want %s", dup, d, AuthDuplicate)
					}
				}
			}
			// Sign, with the primary key, makes what the check accepts.
			u, _ := url.Parse("http://cdn.example.com" + tt.clean)
			s, err := Sign(tt.cfg, u, tt.signedAt, "0", "0")
			if err != nil {
				t.Fatal(err)
			}
			if d := check(p, s.RequestURI(), tt.signedAt); d.Reason != "" {
				t.Errorf("Sign made %s: %+v", s, d)
			}
		})
	}
}

// TestURLAuthConfigErrors: each mistake is named.
func TestURLAuthConfigErrors(t *testing.T) {
	for _, tt := range []struct {
		cfg  URLAuthConfig
		want string
	}{
		{URLAuthConfig{Type: "D", Key: key}, `url_auth.type: "D" is not A, B, C or F`},
		{URLAuthConfig{Type: "A"}, "url_auth.key: required"},
		{URLAuthConfig{Type: "A", Key: "abc"}, "url_auth.key: 3 characters"},
		{URLAuthConfig{Type: "B", Key: key, Param: "x"}, "type B signs in the path"},
		{URLAuthConfig{Type: "C", Key: key, Param: "x"}, "needs param and time_param"},
		{URLAuthConfig{Type: "F", Key: key, Param: "t", TimeParam: "t"}, `"t" is also param`},
		{URLAuthConfig{Type: "A", Key: key, TimeFormat: "hex"}, "only type F takes a time format"},
		{URLAuthConfig{Type: "F", Key: key, TTL: units.Duration(-time.Second)}, "url_auth.ttl"},
	} {
		if _, err := (Config{URLAuth: &tt.cfg}).Compile(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: %v; want %q", tt.cfg, err, tt.want)
		}
	}
}

// TestLists: Referer, client address and User-Agent lists, allow and deny.
func TestLists(t *testing.T) {
	yes := true
	now := time.Now()
	p := policy(t, Config{Referer: &RefererConfig{ListConfig: ListConfig{Allow: []string{"example.com", "*.cdn.test"}}, AllowEmpty: &yes}})
	for ref, want := range map[string]string{
		"": "", "https://example.com/page": "", "http://www.EXAMPLE.com./": "", "https://a.cdn.test/x": "",
		"https://cdn.test/": DeniedReferer, "https://evil.test/?example.com": DeniedReferer, "https://example.com.evil.test/": DeniedReferer,
		"not a url": DeniedReferer,
	} {
		if d := check(p, "/a.png", now, "Referer", ref); d.Reason != want {
			t.Errorf("allow list, Referer %q: %q; want %q", ref, d.Reason, want)
		}
	}
	p = policy(t, Config{Referer: &RefererConfig{ListConfig: ListConfig{Deny: []string{"evil.test"}}}})
	for ref, want := range map[string]string{"": "", "https://ok.test/": "", "https://x.evil.test/": DeniedReferer} {
		if d := check(p, "/a.png", now, "Referer", ref); d.Reason != want {
			t.Errorf("deny list, Referer %q: %q; want %q", ref, d.Reason, want)
		}
	}
	p = policy(t, Config{Referer: &RefererConfig{ListConfig: ListConfig{Allow: []string{"example.com"}}}})
	if d := check(p, "/a.png", now); d.Reason != DeniedReferer {
		t.Errorf("allow list without allow_empty, no Referer: %+v", d)
	}

	p = policy(t, Config{IP: &IPConfig{ListConfig: ListConfig{Deny: []string{"127.0.0.2", "2001:db8::/32"}}, TrustProxy: []string{"10.0.0.0/8"}}})
	for _, tt := range []struct{ remote, xff, want string }{
		{"127.0.0.1", "", ""}, {"127.0.0.2", "", DeniedIP}, {"::ffff:127.0.0.2", "", DeniedIP}, {"2001:db8::5", "", DeniedIP},
		{"10.1.2.3", "127.0.0.2, 10.9.9.9", DeniedIP}, {"10.1.2.3", "127.0.0.1", ""}, {"127.0.0.1", "127.0.0.2", ""},
	} {
		h := http.Header{}
		if tt.xff != "" {
			h.Set("X-Forwarded-For", tt.xff)
		}
		d := p.Check(&Request{Path: "/", Remote: netip.MustParseAddr(tt.remote), Header: h, Now: now})
		if d.Reason != tt.want {
			t.Errorf("ip %s (XFF %q): %q; want %q", tt.remote, tt.xff, d.Reason, tt.want)
		}
	}

	p = policy(t, Config{UserAgent: &ListConfig{Deny: []string{"*curl*", "python-requests/*", "BadBot"}}})
	for ua, want := range map[string]string{"Mozilla/5.0 Firefox": "", "curl/8.1": DeniedUserAgent, "python-requests/2.31": DeniedUserAgent,
		"badbot": DeniedUserAgent, "BadBot/2": "", "": ""} {
		if d := check(p, "/", now, "User-Agent", ua); d.Reason != want {
			t.Errorf("user agent %q: %q; want %q", ua, d.Reason, want)
		}
	}
	for _, tt := range []struct {
		cfg  Config
		want string
	}{
		{Config{Referer: &RefererConfig{ListConfig: ListConfig{Allow: []string{"a.test"}, Deny: []string{"b.test"}}}}, "referer: allow and deny exclude each other"},
		{Config{Referer: &RefererConfig{}}, "referer: an allow or a deny list is required"},
		{Config{Referer: &RefererConfig{ListConfig: ListConfig{Allow: []string{"https://a.test/"}}}}, "referer.allow[0]"},
		{Config{IP: &IPConfig{ListConfig: ListConfig{Deny: []string{"10.0.0.0/33"}}}}, `ip.deny[0]: "10.0.0.0/33" is not a CIDR`},
		{Config{IP: &IPConfig{ListConfig: ListConfig{Deny: []string{"10.0.0.1"}}, TrustProxy: []string{"x"}}}, "ip.trust_proxy[0]"},
		{Config{UserAgent: &ListConfig{Allow: []string{""}}}, "user_agent.allow[0]: an empty pattern"},
		{Config{RateLimit: &RateLimitConfig{Requests: 0, Per: units.Duration(time.Second)}}, "rate_limit: requests (0) and per (1s) must be positive"},
	} {
		if _, err := tt.cfg.Compile(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: %v; want %q", tt.cfg, err, tt.want)
		}
	}
}

// TestRateLimit: a client over its bucket is told when to come back; another
// address is unaffected; tokens return with time.
func TestRateLimit(t *testing.T) {
	p := policy(t, Config{RateLimit: &RateLimitConfig{Requests: 20, Per: units.Duration(time.Second), Burst: 20}})
	now := time.Now()
	at := func(remote string, when time.Time) Decision {
		return p.Check(&Request{Path: "/", Remote: netip.MustParseAddr(remote), Header: http.Header{}, Now: when})
	}
	limited := 0
	for range 60 {
		if d := at("127.0.0.2", now); d.Reason == RateLimited {
			limited++
			if d.Status != http.StatusTooManyRequests || d.RetryAfter <= 0 || d.RetryAfter > 100*time.Millisecond {
				t.Fatalf("limited: %+v", d)
			}
		}
	}
	if limited != 40 {
		t.Errorf("%d of 60 limited at one instant with a burst of 20; want 40", limited)
	}
	if d := at("127.0.0.3", now); d.Reason != "" {
		t.Errorf("another client: %+v", d)
	}
	if d := at("127.0.0.2", now.Add(100*time.Millisecond)); d.Reason != "" {
		t.Errorf("after 100 ms (2 tokens back): %+v", d)
	}
}

// TestRateLimitMemory: the clients remembered stay bounded however many
// addresses come.
func TestRateLimitMemory(t *testing.T) {
	l, err := RateLimitConfig{Requests: 1, Per: units.Duration(time.Second)}.compile()
	if err != nil {
		t.Fatal(err)
	}
	l.max = 1000
	now := time.Now()
	for i := range 10_000 {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		l.take(a, now)
	}
	if n := l.tracked(); n > 1000 {
		t.Errorf("%d clients remembered; the bound is 1000", n)
	}
	if n := l.tracked(); n == 0 {
		t.Error("nothing remembered")
	}
}

func TestNilPolicy(t *testing.T) {
	p := policy(t, Config{})
	if p != nil {
		t.Fatalf("an empty configuration compiled to %+v", p)
	}
	if d := check(p, "/x", time.Now()); d.Reason != "" || d.Signed {
		t.Errorf("%+v", d)
	}
}

// FuzzCheck: no request, however malformed, makes a decision panic, and a
// signed request always comes back with a path.
func FuzzCheck(f *testing.F) {
	f.Add("/201508150800/9044548ef1527deadafa49a890a377f0/4/a.mp3", "auth_key=1-2-3-4&sign=x&time=1&KEY1=a&KEY2=b")
	f.Add("/a37fa50a5fb8f71214b1e7c95ec7a1bd/55CE8100/test.flv", "")
	f.Add("/x", "auth_key=1444435200-0-0-80cd3862d699b7118eed99103f2a3a4f")
	var policies []*Policy
	for _, c := range []URLAuthConfig{{Type: "A", Key: key}, {Type: "B", Key: key}, {Type: "C", Key: key},
		{Type: "C", Key: key, Param: "KEY1", TimeParam: "KEY2"}, {Type: "F", Key: key, TimeFormat: "hex"}} {
		p, err := Config{URLAuth: &c}.Compile()
		if err != nil {
			f.Fatal(err)
		}
		policies = append(policies, p)
	}
	f.Fuzz(func(t *testing.T, path, query string) {
		for _, p := range policies {
			d := p.Check(&Request{Path: path, RawQuery: query, Header: http.Header{}, Now: time.Unix(1439596800, 0)})
			if d.Signed && (d.Path == "" || d.Path[0] != '/') {
				t.Fatalf("signed %q?%q came back as %q", path, query, d.Path)
			}
		}
	})
}
