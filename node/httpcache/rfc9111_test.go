package httpcache

import (
	"net/http"
	"testing"
	"time"
)

var (
	date   = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	static = Policy{Heuristic: true}
	origin = Policy{}
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
		name       string
		status     int
		h          http.Header
		authorized bool
		policy     Policy
		store      bool
		ttl        time.Duration
		source     Source
		reason     string
	}{
		{"max-age", 200, hdr("Cache-Control", "max-age=60"), false, origin, true, time.Minute, SourceMaxAge, ""},
		{"s-maxage over max-age", 200, hdr("Cache-Control", "max-age=60, s-maxage=120"), false, origin, true, 2 * time.Minute, SourceSMaxAge, ""},
		{"s-maxage alone", 200, hdr("Cache-Control", "s-maxage=30"), false, origin, true, 30 * time.Second, SourceSMaxAge, ""},
		{"max-age over Expires", 200, hdr("Cache-Control", "max-age=10", "Expires", at(time.Hour)), false, origin, true, 10 * time.Second, SourceMaxAge, ""},
		{"Expires minus Date", 200, hdr("Expires", at(90*time.Second)), false, origin, true, 90 * time.Second, SourceExpires, ""},
		{"Expires in the past", 200, hdr("Expires", at(-time.Hour)), false, origin, false, 0, "", "expired"},
		{"Expires in the past with validator", 200, hdr("Expires", at(-time.Hour), "ETag", `"a"`), false, origin, true, 0, SourceExpires, ""},
		{"invalid Expires is expired", 200, hdr("Expires", "0"), false, origin, false, 0, "", "expired"},
		{"no-store", 200, hdr("Cache-Control", "no-store, max-age=60"), false, static, false, 0, "", "no-store"},
		{"private", 200, hdr("Cache-Control", "private, max-age=60"), false, static, false, 0, "", "private"},
		{"qualified private stores the rest", 200, hdr("Cache-Control", `private="x-user", max-age=60`), false, origin, true, time.Minute, SourceMaxAge, ""},
		{"no-cache with validator is stored, always revalidated", 200, hdr("Cache-Control", "no-cache", "ETag", `"v1"`), false, static, true, 0, SourceNoCache, ""},
		{"no-cache without validator", 200, hdr("Cache-Control", "no-cache"), false, static, false, 0, "", "no-cache"},
		{"max-age=0 with validator", 200, hdr("Cache-Control", "max-age=0", "Last-Modified", at(-time.Hour)), false, static, true, 0, SourceNoCache, ""},
		{"s-maxage=0 beats max-age", 200, hdr("Cache-Control", "s-maxage=0, max-age=600"), false, origin, false, 0, "", "no-cache"},
		{"must-revalidate keeps max-age", 200, hdr("Cache-Control", "max-age=60, must-revalidate"), false, origin, true, time.Minute, SourceMaxAge, ""},
		{"proxy-revalidate keeps max-age", 200, hdr("Cache-Control", "max-age=60, proxy-revalidate"), false, origin, true, time.Minute, SourceMaxAge, ""},
		{"authorization without permission", 200, hdr("Cache-Control", "max-age=60"), true, origin, false, 0, "", "authorization"},
		{"authorization with public", 200, hdr("Cache-Control", "public, max-age=60"), true, origin, true, time.Minute, SourceMaxAge, ""},
		{"authorization with s-maxage", 200, hdr("Cache-Control", "s-maxage=60"), true, origin, true, time.Minute, SourceSMaxAge, ""},
		{"authorization with must-revalidate", 200, hdr("Cache-Control", "max-age=60, must-revalidate"), true, origin, true, time.Minute, SourceMaxAge, ""},
		{"heuristic from Last-Modified", 200, hdr("Last-Modified", at(-100*time.Minute)), false, static, true, 10 * time.Minute, SourceHeuristic, ""},
		{"heuristic floor 10s", 200, hdr("Last-Modified", at(-time.Minute)), false, static, true, 10 * time.Second, SourceHeuristic, ""},
		{"heuristic cap 1h", 200, hdr("Last-Modified", at(-1000*time.Hour)), false, static, true, time.Hour, SourceHeuristic, ""},
		{"heuristic without Last-Modified", 200, hdr(), false, static, true, 10 * time.Second, SourceHeuristic, ""},
		{"no heuristic outside static rules", 200, hdr("Last-Modified", at(-100*time.Minute)), false, origin, false, 0, "", "no-freshness"},
		{"heuristic 404", 404, hdr(), false, static, true, 10 * time.Second, SourceHeuristic, ""},
		{"heuristic 301", 301, hdr(), false, static, true, 10 * time.Second, SourceHeuristic, ""},
		{"no heuristic for 302", 302, hdr(), false, static, false, 0, "", "uncacheable-status"},
		{"no heuristic for 500", 500, hdr(), false, static, false, 0, "", "uncacheable-status"},
		{"500 with explicit max-age", 500, hdr("Cache-Control", "max-age=5"), false, origin, true, 5 * time.Second, SourceMaxAge, ""},
		{"302 with public gets heuristic", 302, hdr("Cache-Control", "public"), false, static, true, 10 * time.Second, SourceHeuristic, ""},
		{"206 never stored", 206, hdr("Cache-Control", "max-age=60"), false, origin, false, 0, "", "uncacheable-status"},
		{"304 never stored", 304, hdr("Cache-Control", "max-age=60"), false, origin, false, 0, "", "uncacheable-status"},
		{"1xx never stored", 103, hdr(), false, static, false, 0, "", "uncacheable-status"},
		{"rule TTL overrides origin", 200, hdr("Cache-Control", "max-age=5"), false, Policy{TTL: time.Hour, Heuristic: true}, true, time.Hour, SourceRule, ""},
		{"rule TTL when origin is silent", 200, hdr(), false, Policy{TTL: time.Hour}, true, time.Hour, SourceRule, ""},
		{"follow origin: origin wins", 200, hdr("Cache-Control", "max-age=5"), false, Policy{TTL: time.Hour, FollowOrigin: true}, true, 5 * time.Second, SourceMaxAge, ""},
		{"follow origin: TTL as fallback", 200, hdr(), false, Policy{TTL: time.Hour, FollowOrigin: true}, true, time.Hour, SourceRule, ""},
		{"origin no-store beats rule TTL", 200, hdr("Cache-Control", "no-store"), false, Policy{TTL: time.Hour}, false, 0, "", "no-store"},
		{"origin max-age=0 beats rule TTL", 200, hdr("Cache-Control", "max-age=0"), false, Policy{TTL: time.Hour}, false, 0, "", "no-cache"},
		{"rule TTL not for 500", 500, hdr(), false, Policy{TTL: time.Hour, Heuristic: true}, false, 0, "", "uncacheable-status"},
		{"Vary star", 200, hdr("Cache-Control", "max-age=60", "Vary", "Accept, *"), false, origin, false, 0, "", "vary-star"},
		{"Vary on a field is fine", 200, hdr("Cache-Control", "max-age=60", "Vary", "Accept-Encoding"), false, origin, true, time.Minute, SourceMaxAge, ""},
		{"Set-Cookie not shared", 200, hdr("Cache-Control", "max-age=60", "Set-Cookie", "sid=1"), false, static, false, 0, "", "set-cookie"},
		{"Set-Cookie with public", 200, hdr("Cache-Control", "public, max-age=60", "Set-Cookie", "a=1"), false, origin, true, time.Minute, SourceMaxAge, ""},
		{"Set-Cookie named by no-cache", 200, hdr("Cache-Control", `no-cache="Set-Cookie", max-age=60`, "Set-Cookie", "a=1"), false, origin, true, time.Minute, SourceMaxAge, ""},
		{"malformed max-age is stale", 200, hdr("Cache-Control", "max-age=abc", "ETag", `"e"`), false, origin, true, 0, SourceNoCache, ""},
		{"first max-age wins", 200, hdr("Cache-Control", "max-age=30, max-age=90"), false, origin, true, 30 * time.Second, SourceMaxAge, ""},
		{"huge max-age is capped", 200, hdr("Cache-Control", "max-age=99999999999999999999"), false, origin, true, 2147483648 * time.Second, SourceMaxAge, ""},
		{"directive names are case-insensitive", 200, hdr("Cache-Control", "MAX-AGE=60, Public"), false, origin, true, time.Minute, SourceMaxAge, ""},
		{"directives across field lines", 200, hdr("Cache-Control", "public", "Cache-Control", "max-age=7"), false, origin, true, 7 * time.Second, SourceMaxAge, ""},
		{"no-store across field lines", 200, hdr("Cache-Control", "max-age=60", "Cache-Control", "no-store"), false, origin, false, 0, "", "no-store"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cc := ParseCacheControl(tt.h)
			d := Decide(tt.status, tt.h, cc, tt.authorized, tt.policy)
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
