package httpcache

import (
	"net/http"
	"testing"
	"time"
)

var (
	date    = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	static  = Policy{Heuristic: Heuristic{Factor: 0.1, Max: time.Hour, Static: true}}
	origin  = Policy{} // heuristic: off
	dflt    = Policy{Heuristic: DefaultHeuristic}
	checked = Policy{Heuristic: Heuristic{Factor: 0.1, Max: time.Hour, Static: true}, CheckType: true}
)

func hdr(kv ...string) http.Header {
	h := http.Header{"Date": {date.Format(http.TimeFormat)}}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

func at(d time.Duration) string { return date.Add(d).Format(http.TimeFormat) }

// TestDecide checks storability (RFC 9111 §3) and freshness lifetime (§4.2.1,
// §4.2.2) for a shared cache, with the site rule's policy.
func TestDecide(t *testing.T) {
	tests := []struct {
		name   string
		status int
		h      http.Header
		rq     Request
		policy Policy
		store  bool
		ttl    time.Duration
		source Source
		reason string
	}{
		{"max-age", 200, hdr("Cache-Control", "max-age=60"), Request{}, origin, true, time.Minute, SourceMaxAge, ""},
		{"s-maxage over max-age", 200, hdr("Cache-Control", "max-age=60, s-maxage=120"), Request{}, origin, true, 2 * time.Minute, SourceSMaxAge, ""},
		{"s-maxage alone", 200, hdr("Cache-Control", "s-maxage=30"), Request{}, origin, true, 30 * time.Second, SourceSMaxAge, ""},
		{"max-age over Expires", 200, hdr("Cache-Control", "max-age=10", "Expires", at(time.Hour)), Request{}, origin, true, 10 * time.Second, SourceMaxAge, ""},
		{"Expires minus Date", 200, hdr("Expires", at(90*time.Second)), Request{}, origin, true, 90 * time.Second, SourceExpires, ""},
		{"Expires in the past", 200, hdr("Expires", at(-time.Hour)), Request{}, origin, false, 0, "", "expired"},
		{"Expires in the past with validator", 200, hdr("Expires", at(-time.Hour), "ETag", `"a"`), Request{}, origin, true, 0, SourceExpires, ""},
		{"invalid Expires is expired", 200, hdr("Expires", "0"), Request{}, origin, false, 0, "", "expired"},
		{"no-store", 200, hdr("Cache-Control", "no-store, max-age=60"), Request{}, static, false, 0, "", "no-store"},
		{"private", 200, hdr("Cache-Control", "private, max-age=60"), Request{}, static, false, 0, "", "private"},
		{"qualified private stores the rest", 200, hdr("Cache-Control", `private="x-user", max-age=60`), Request{}, origin, true, time.Minute, SourceMaxAge, ""},
		{"no-cache with validator is stored, always revalidated", 200, hdr("Cache-Control", "no-cache", "ETag", `"v1"`), Request{}, static, true, 0, SourceNoCache, ""},
		{"no-cache without validator", 200, hdr("Cache-Control", "no-cache"), Request{}, static, false, 0, "", "no-cache"},
		{"max-age=0 with validator", 200, hdr("Cache-Control", "max-age=0", "Last-Modified", at(-time.Hour)), Request{}, static, true, 0, SourceNoCache, ""},
		{"s-maxage=0 beats max-age", 200, hdr("Cache-Control", "s-maxage=0, max-age=600"), Request{}, origin, false, 0, "", "no-cache"},
		{"must-revalidate keeps max-age", 200, hdr("Cache-Control", "max-age=60, must-revalidate"), Request{}, origin, true, time.Minute, SourceMaxAge, ""},
		{"proxy-revalidate keeps max-age", 200, hdr("Cache-Control", "max-age=60, proxy-revalidate"), Request{}, origin, true, time.Minute, SourceMaxAge, ""},
		{"authorization without permission", 200, hdr("Cache-Control", "max-age=60"), Request{Authorized: true}, origin, false, 0, "", "authorization"},
		{"authorization with public", 200, hdr("Cache-Control", "public, max-age=60"), Request{Authorized: true}, origin, true, time.Minute, SourceMaxAge, ""},
		{"authorization with s-maxage", 200, hdr("Cache-Control", "s-maxage=60"), Request{Authorized: true}, origin, true, time.Minute, SourceSMaxAge, ""},
		{"authorization with must-revalidate", 200, hdr("Cache-Control", "max-age=60, must-revalidate"), Request{Authorized: true}, origin, true, time.Minute, SourceMaxAge, ""},
		{"heuristic from Last-Modified", 200, hdr("Last-Modified", at(-100*time.Minute)), Request{}, static, true, 10 * time.Minute, SourceHeuristic, ""},
		{"heuristic floor 10s", 200, hdr("Last-Modified", at(-time.Minute)), Request{}, static, true, 10 * time.Second, SourceHeuristic, ""},
		{"heuristic cap 1h", 200, hdr("Last-Modified", at(-1000*time.Hour)), Request{}, static, true, time.Hour, SourceHeuristic, ""},
		{"heuristic without Last-Modified", 200, hdr(), Request{}, static, true, 10 * time.Second, SourceHeuristic, ""},
		{"no heuristic when off", 200, hdr("Last-Modified", at(-100*time.Minute)), Request{}, origin, false, 0, "", "no-freshness"},
		{"default heuristic from Last-Modified", 200, hdr("Last-Modified", at(-24*time.Hour)), Request{}, dflt, true, 144 * time.Minute, SourceHeuristic, ""},
		{"default heuristic cap 1d", 200, hdr("Last-Modified", at(-1000*time.Hour)), Request{}, dflt, true, 24 * time.Hour, SourceHeuristic, ""},
		{"default heuristic needs Last-Modified", 200, hdr(), Request{}, dflt, false, 0, "", "no-freshness"},
		{"default heuristic, Last-Modified after Date", 200, hdr("Last-Modified", at(time.Hour)), Request{}, dflt, false, 0, "", "no-freshness"},
		{"default heuristic 204", 204, hdr("Last-Modified", at(-24*time.Hour)), Request{}, dflt, true, 144 * time.Minute, SourceHeuristic, ""},
		{"default heuristic 410", 410, hdr("Last-Modified", at(-24*time.Hour)), Request{}, dflt, true, 144 * time.Minute, SourceHeuristic, ""},
		{"default heuristic 501", 501, hdr("Last-Modified", at(-24*time.Hour)), Request{}, dflt, true, 144 * time.Minute, SourceHeuristic, ""},
		{"no heuristic for 201", 201, hdr("Last-Modified", at(-24*time.Hour)), Request{}, dflt, false, 0, "", "uncacheable-status"},
		{"no heuristic for 503", 503, hdr("Last-Modified", at(-24*time.Hour)), Request{}, dflt, false, 0, "", "uncacheable-status"},
		{"599 with public gets heuristic", 599, hdr("Last-Modified", at(-24*time.Hour), "Cache-Control", "public"), Request{}, dflt, true, 144 * time.Minute, SourceHeuristic, ""},
		{"heuristic factor", 200, hdr("Last-Modified", at(-time.Hour)), Request{}, Policy{Heuristic: Heuristic{Factor: 0.5, Max: time.Hour}}, true, 30 * time.Minute, SourceHeuristic, ""},
		{"default heuristic, cookie without permission", 200, hdr("Last-Modified", at(-24*time.Hour)), Request{Cookie: true}, dflt, false, 0, "", "cookie"},
		{"heuristic 404", 404, hdr(), Request{}, static, true, 10 * time.Second, SourceHeuristic, ""},
		{"heuristic 301", 301, hdr(), Request{}, static, true, 10 * time.Second, SourceHeuristic, ""},
		{"no heuristic for 302", 302, hdr(), Request{}, static, false, 0, "", "uncacheable-status"},
		{"no heuristic for 500", 500, hdr(), Request{}, static, false, 0, "", "uncacheable-status"},
		{"500 with explicit max-age", 500, hdr("Cache-Control", "max-age=5"), Request{}, origin, true, 5 * time.Second, SourceMaxAge, ""},
		{"302 with public gets heuristic", 302, hdr("Cache-Control", "public"), Request{}, static, true, 10 * time.Second, SourceHeuristic, ""},
		{"206 never stored", 206, hdr("Cache-Control", "max-age=60"), Request{}, origin, false, 0, "", "uncacheable-status"},
		{"304 never stored", 304, hdr("Cache-Control", "max-age=60"), Request{}, origin, false, 0, "", "uncacheable-status"},
		{"1xx never stored", 103, hdr(), Request{}, static, false, 0, "", "uncacheable-status"},
		{"rule TTL overrides origin", 200, hdr("Cache-Control", "max-age=5"), Request{}, Policy{TTL: time.Hour, Heuristic: DefaultHeuristic}, true, time.Hour, SourceRule, ""},
		{"rule TTL when origin is silent", 200, hdr(), Request{}, Policy{TTL: time.Hour}, true, time.Hour, SourceRule, ""},
		{"follow origin: origin wins", 200, hdr("Cache-Control", "max-age=5"), Request{}, Policy{TTL: time.Hour, FollowOrigin: true}, true, 5 * time.Second, SourceMaxAge, ""},
		{"follow origin: TTL as fallback", 200, hdr(), Request{}, Policy{TTL: time.Hour, FollowOrigin: true}, true, time.Hour, SourceRule, ""},
		{"origin no-store beats rule TTL", 200, hdr("Cache-Control", "no-store"), Request{}, Policy{TTL: time.Hour}, false, 0, "", "no-store"},
		{"origin max-age=0 beats rule TTL", 200, hdr("Cache-Control", "max-age=0"), Request{}, Policy{TTL: time.Hour}, false, 0, "", "no-cache"},
		{"rule TTL not for 500", 500, hdr(), Request{}, Policy{TTL: time.Hour, Heuristic: DefaultHeuristic}, false, 0, "", "uncacheable-status"},
		{"Vary star", 200, hdr("Cache-Control", "max-age=60", "Vary", "Accept, *"), Request{}, origin, false, 0, "", "vary-star"},
		{"Vary on a field is fine", 200, hdr("Cache-Control", "max-age=60", "Vary", "Accept-Encoding"), Request{}, origin, true, time.Minute, SourceMaxAge, ""},
		{"Set-Cookie not shared", 200, hdr("Cache-Control", "max-age=60", "Set-Cookie", "sid=1"), Request{}, static, false, 0, "", "set-cookie"},
		{"Set-Cookie with public", 200, hdr("Cache-Control", "public, max-age=60", "Set-Cookie", "a=1"), Request{}, origin, true, time.Minute, SourceMaxAge, ""},
		{"Set-Cookie named by no-cache", 200, hdr("Cache-Control", `no-cache="Set-Cookie", max-age=60`, "Set-Cookie", "a=1"), Request{}, origin, true, time.Minute, SourceMaxAge, ""},
		{"malformed max-age is stale", 200, hdr("Cache-Control", "max-age=abc", "ETag", `"e"`), Request{}, origin, true, 0, SourceNoCache, ""},
		{"first max-age wins", 200, hdr("Cache-Control", "max-age=30, max-age=90"), Request{}, origin, true, 30 * time.Second, SourceMaxAge, ""},
		{"huge max-age is capped", 200, hdr("Cache-Control", "max-age=99999999999999999999"), Request{}, origin, true, 2147483648 * time.Second, SourceMaxAge, ""},
		{"directive names are case-insensitive", 200, hdr("Cache-Control", "MAX-AGE=60, Public"), Request{}, origin, true, time.Minute, SourceMaxAge, ""},
		{"directives across field lines", 200, hdr("Cache-Control", "public", "Cache-Control", "max-age=7"), Request{}, origin, true, 7 * time.Second, SourceMaxAge, ""},
		{"no-store across field lines", 200, hdr("Cache-Control", "max-age=60", "Cache-Control", "no-store"), Request{}, origin, false, 0, "", "no-store"},
		// Web cache deception: personal pages are not shared.
		{"cookie without permission", 200, hdr("Last-Modified", at(-time.Hour)), Request{Cookie: true, Ext: "css"}, static, false, 0, "", "cookie"},
		{"cookie without permission, rule TTL", 200, hdr(), Request{Cookie: true}, Policy{TTL: time.Hour}, false, 0, "", "cookie"},
		{"cookie with max-age", 200, hdr("Cache-Control", "max-age=60"), Request{Cookie: true}, static, true, time.Minute, SourceMaxAge, ""},
		{"cookie with Expires", 200, hdr("Expires", at(time.Minute)), Request{Cookie: true}, static, true, time.Minute, SourceExpires, ""},
		{"cookie with public", 200, hdr("Cache-Control", "public"), Request{Cookie: true}, static, true, 10 * time.Second, SourceHeuristic, ""},
		{"cookie ignored by the rule", 200, hdr(), Request{Cookie: true}, Policy{TTL: time.Hour, IgnoreCookie: true}, true, time.Hour, SourceRule, ""},
		{"HTML behind .css", 200, hdr("Content-Type", "text/html; charset=utf-8"), Request{Ext: "css"}, checked, false, 0, "", "content-type-mismatch"},
		{"JSON behind .png, rule TTL", 200, hdr("Content-Type", "application/json"), Request{Ext: "png"}, Policy{TTL: time.Hour, CheckType: true}, false, 0, "", "content-type-mismatch"},
		{"HTML behind .css with the origin's max-age", 200, hdr("Content-Type", "text/html", "Cache-Control", "max-age=60"), Request{Ext: "css"}, checked, true, time.Minute, SourceMaxAge, ""},
		{"CSS behind .css", 200, hdr("Content-Type", "text/css"), Request{Ext: "css"}, checked, true, 10 * time.Second, SourceHeuristic, ""},
		{"HTML behind .css, check off", 200, hdr("Content-Type", "text/html"), Request{Ext: "css"}, static, true, 10 * time.Second, SourceHeuristic, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cc := ParseCacheControl(tt.h)
			d := Decide(tt.status, tt.h, cc, tt.rq, tt.policy)
			if d.Store != tt.store || d.TTL != tt.ttl || d.Source != tt.source || d.Reason != tt.reason {
				t.Errorf("Decide(%d, %v) = store %v ttl %v source %q reason %q; want store %v ttl %v source %q reason %q",
					tt.status, tt.h, d.Store, d.TTL, d.Source, d.Reason, tt.store, tt.ttl, tt.source, tt.reason)
			}
		})
	}
}

func TestInitialAge(t *testing.T) {
	req := date
	tests := []struct {
		name string
		h    http.Header
		resp time.Time
		want time.Duration
	}{
		{"fresh from origin", hdr(), date, 0},
		{"Age field counts", hdr("Age", "30"), date, 30 * time.Second},
		{"round trip is added", hdr("Age", "30"), date.Add(2 * time.Second), 32 * time.Second},
		{"apparent age from Date", http.Header{"Date": {date.Add(-time.Minute).Format(http.TimeFormat)}}, date, time.Minute},
		{"larger of apparent and corrected", http.Header{"Date": {date.Add(-time.Minute).Format(http.TimeFormat)}, "Age": {"10"}}, date, time.Minute},
		{"Date in the future is ignored", http.Header{"Date": {date.Add(time.Hour).Format(http.TimeFormat)}}, date, 0},
		{"malformed Age counts as 0", hdr("Age", "soon"), date, 0},
	}
	for _, tt := range tests {
		if got := InitialAge(tt.h, req, tt.resp); got != tt.want {
			t.Errorf("%s: InitialAge = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestVary(t *testing.T) {
	tests := []struct {
		name   string
		vary   string
		a, b   http.Header
		shared bool
	}{
		{"no Vary", "", http.Header{"Accept": {"a"}}, http.Header{"Accept": {"b"}}, true},
		{"same value", "Accept-Language", http.Header{"Accept-Language": {"en"}}, http.Header{"Accept-Language": {"en"}}, true},
		{"different value", "Accept-Language", http.Header{"Accept-Language": {"en"}}, http.Header{"Accept-Language": {"fr"}}, false},
		{"absent vs present", "Accept-Language", http.Header{}, http.Header{"Accept-Language": {"fr"}}, false},
		{"white space folded", "Accept-Language", http.Header{"Accept-Language": {"en,  fr"}}, http.Header{"Accept-Language": {" en, fr "}}, true},
		{"field name case", "accept-language", http.Header{"Accept-Language": {"en"}}, http.Header{"Accept-Language": {"en"}}, true},
		{"Accept-Encoding order", "Accept-Encoding", http.Header{"Accept-Encoding": {"gzip, deflate, br"}}, http.Header{"Accept-Encoding": {"br, gzip, deflate"}}, true},
		{"Accept-Encoding q-values", "Accept-Encoding", http.Header{"Accept-Encoding": {"gzip;q=1.0, identity; q=0.5"}}, http.Header{"Accept-Encoding": {"GZIP"}}, true},
		{"Accept-Encoding q=0 refuses", "Accept-Encoding", http.Header{"Accept-Encoding": {"gzip;q=0"}}, http.Header{"Accept-Encoding": {"gzip"}}, false},
		{"Accept-Encoding differs", "Accept-Encoding", http.Header{"Accept-Encoding": {"gzip"}}, http.Header{"Accept-Encoding": {"br"}}, false},
		{"two fields", "Accept-Encoding, Accept-Language", http.Header{"Accept-Encoding": {"gzip"}, "Accept-Language": {"en"}}, http.Header{"Accept-Encoding": {"gzip"}, "Accept-Language": {"de"}}, false},
	}
	for _, tt := range tests {
		names := VaryFields(http.Header{"Vary": {tt.vary}})
		ka, kb := SecondaryKey(names, tt.a), SecondaryKey(names, tt.b)
		if (ka == kb) != tt.shared {
			t.Errorf("%s: keys %q and %q, want shared=%v", tt.name, ka, kb, tt.shared)
		}
	}
	if !VaryStar(http.Header{"Vary": {"Accept", "*"}}) || VaryStar(http.Header{"Vary": {"Accept"}}) {
		t.Error("VaryStar misreads Vary")
	}
	if got := NormalizeAcceptEncoding([]string{"deflate, gzip, br, zstd"}); got != "br, gzip, zstd, deflate" {
		t.Errorf("NormalizeAcceptEncoding = %q", got)
	}
}

func TestTypeFits(t *testing.T) {
	for _, c := range []struct {
		ext, ct string
		fits    bool
	}{
		{"css", "text/css", true},
		{"css", "text/html; charset=utf-8", false},
		{"css", "TEXT/HTML", false},
		{"js", "application/json", false},
		{"png", "application/problem+json", false},
		{"jpg", "application/xhtml+xml", false},
		{"woff2", "application/octet-stream", true},
		{"js", "text/plain", true},
		{"html", "text/html", true},
		{"json", "application/json", true},
		{"map", "application/json", true},
		{"svg", "image/svg+xml", true},
		{"xml", "text/xml", true},
		{"css", "", true},
		{"", "text/html", true},
		{"css", "text/html;;bad", false},
	} {
		if got := TypeFits(c.ext, c.ct); got != c.fits {
			t.Errorf("TypeFits(%q, %q) = %v, want %v", c.ext, c.ct, got, c.fits)
		}
	}
}

// TestValidTargeted: a targeted field is used only when it is a valid
// Structured Fields Dictionary with Cache-Control's types (RFC 9213 §2.1);
// an invalid one is ignored, for the next targeted field or Cache-Control.
func TestValidTargeted(t *testing.T) {
	for v, want := range map[string]bool{
		"max-age=600": true,
		"max-age=600, stale-while-revalidate=30, must-revalidate": true,
		`no-cache="set-cookie", s-maxage=10`:                      true,
		"private, no-store":                                       true,
		"max-age=600, x-vendor=abc":                               true, // unknown directives: any type
		"":                                                        false,
		"max-age=10000, &&&&&":                                    false,
		`max-age="10000"`:                                         false,
		"max-age=-5":                                              false,
		"max-age=1.5":                                             false,
		"no-store=5":                                              false,
		"public=?0":                                               false,
		"no-cache=(a b)":                                          false,
	} {
		if got := ValidTargeted([]string{v}); got != want {
			t.Errorf("ValidTargeted(%q) = %v; want %v", v, got, want)
		}
	}
	h := http.Header{"Meshcdn-Cache-Control": {"max-age=-5"}, "Cdn-Cache-Control": {"max-age=600"}, "Cache-Control": {"no-store"}}
	if d := ResponseDirectives(h); d.MaxAge != 600 || d.NoStore {
		t.Errorf("an invalid first targeted field: max-age %d, no-store %v; want the second's", d.MaxAge, d.NoStore)
	}
	DropInvalidTargeted(h)
	if _, ok := h["Meshcdn-Cache-Control"]; ok || h.Get("Cdn-Cache-Control") != "max-age=600" {
		t.Errorf("after DropInvalidTargeted: %v", h)
	}
	if d := ResponseDirectives(http.Header{"Cdn-Cache-Control": {`max-age="10000"`}, "Cache-Control": {"no-store"}}); !d.NoStore {
		t.Error("an invalid only targeted field was not ignored for Cache-Control")
	}
}
