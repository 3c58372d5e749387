package httpcache

import (
	"net/http"
	"testing"
	"time"
)

func TestResponseDirectives(t *testing.T) {
	h := http.Header{"Cache-Control": {"no-store"}, "Cdn-Cache-Control": {"max-age=60"}, "Meshcdn-Cache-Control": {"max-age=600, stale-while-revalidate=30"}}
	if d := ResponseDirectives(h); d.MaxAge != 600 || d.NoStore || d.StaleWhileRevalidate != 30 {
		t.Errorf("Meshcdn-Cache-Control first: %+v", d)
	}
	delete(h, "Meshcdn-Cache-Control")
	if d := ResponseDirectives(h); d.MaxAge != 60 || d.NoStore {
		t.Errorf("then CDN-Cache-Control: %+v", d)
	}
	delete(h, "Cdn-Cache-Control")
	if d := ResponseDirectives(h); !d.NoStore {
		t.Errorf("then Cache-Control: %+v", d)
	}
	h = http.Header{"Cache-Control": {"no-store"}, "Cdn-Cache-Control": {"max-age=60"}, "Meshcdn-Cache-Control": {"max-age=600"}}
	DropTargeted(h)
	if _, ok := h["Meshcdn-Cache-Control"]; ok || h.Get("Cdn-Cache-Control") == "" || h.Get("Cache-Control") == "" {
		t.Errorf("DropTargeted drops the field used, only: %v", h)
	}
}

func TestParseHTTPDate(t *testing.T) {
	for _, c := range []struct {
		s  string
		ok bool
	}{
		{"Thu, 01 Dec 1994 16:00:00 GMT", true},
		{"Thursday, 01-Dec-94 16:00:00 GMT", true},
		{"Thu Dec  1 16:00:00 1994", true},
		{"Thu, 01 Dec 1994 6:00:00 GMT", false},
		{"Thu,  01 Dec 1994 16:00:00 GMT", false},
		{"Thu, 1 Dec 1994 16:00:00 GMT", false},
		{"0", false},
	} {
		if _, ok := ParseHTTPDate(c.s); ok != c.ok {
			t.Errorf("ParseHTTPDate(%q) ok = %v, want %v", c.s, ok, c.ok)
		}
	}
	// An invalid or repeated Expires means already expired (RFC 9111 §5.3).
	for _, h := range []http.Header{
		{"Expires": {"Thu, 01 Dec 2094 6:00:00 GMT"}},
		{"Expires": {"Thu, 01 Dec 2094 16:00:00 GMT", "Thu, 01 Dec 2094 16:00:00 GMT"}},
	} {
		if d := Decide(200, h, ParseCacheControl(h), Request{}, Policy{}); d.Store {
			t.Errorf("Expires %q: stored with %v", h["Expires"], d.TTL)
		}
	}
}

// A list in Age uses its first member (RFC 9111 §5.1).
func TestAgeList(t *testing.T) {
	now := time.Now()
	if got := InitialAge(http.Header{"Age": {"7200, 0"}}, now, now); got != 2*time.Hour {
		t.Errorf("Age: 7200, 0 gave %v", got)
	}
}

func TestNormalizeAcceptLanguage(t *testing.T) {
	same := []string{"en, fr", "fr,en", "FR , en;q=1"}
	want := NormalizeAcceptLanguage([]string{same[0]})
	for _, v := range same {
		if got := NormalizeAcceptLanguage([]string{v}); got != want {
			t.Errorf("%q → %q, want %q", v, got, want)
		}
	}
	if a, b := NormalizeAcceptLanguage([]string{"fr;q=0.9, en"}), NormalizeAcceptLanguage([]string{"fr, en;q=0.9"}); a == b {
		t.Errorf("different preferences share %q", a)
	}
}
