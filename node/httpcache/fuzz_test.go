package httpcache

import (
	"net/http"
	"strings"
	"testing"
)

func FuzzParseCacheControl(f *testing.F) {
	for _, s := range []string{"max-age=60", `no-cache="set-cookie"`, "s-maxage=-1, public", "", `private="a,b", max-age="5"`,
		"max-age=99999999999999999999", `x="\"", no-store`, "max-stale", ",,,", "must-revalidate,proxy-revalidate"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d := ParseDirectives(s)
		for _, v := range []int64{d.MaxAge, d.SMaxAge, d.MaxStale, d.MinFresh, d.StaleIfError, d.StaleWhileRevalidate} {
			if v < Unset || v > maxDelta {
				t.Fatalf("delta %d out of range from %q", v, s)
			}
		}
		for _, f := range append(d.NoCacheFields, d.PrivateFields...) {
			if f == "" || f != strings.ToLower(f) {
				t.Fatalf("field %q from %q", f, s)
			}
		}
		h := http.Header{"Cache-Control": {s}}
		dec := Decide(200, h, d, Request{}, Policy{Heuristic: DefaultHeuristic})
		if dec.Store && dec.TTL < 0 {
			t.Fatalf("negative TTL %v from %q", dec.TTL, s)
		}
		if d.NoStore && dec.Store {
			t.Fatalf("no-store stored from %q", s)
		}
	})
}

func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"bytes=0-99", "bytes=-1", "bytes=5-", "bytes=0-0,2-3,-1", "bytes=", "bytes=9-1", "x=1-2", "bytes=18446744073709551615-"} {
		f.Add(s, int64(1000))
	}
	f.Fuzz(func(t *testing.T, s string, size int64) {
		if size < 0 {
			size = -size
		}
		if size < 0 {
			return
		}
		rs, err := ParseRange(s, size)
		if err != nil {
			if rs != nil {
				t.Fatalf("ranges %v with error %v", rs, err)
			}
			return
		}
		if len(rs) == 0 || len(rs) > MaxRanges {
			t.Fatalf("%d ranges from %q", len(rs), s)
		}
		for _, r := range rs {
			if r.Start < 0 || r.Length <= 0 || r.Start+r.Length > size {
				t.Fatalf("range %+v outside %d from %q", r, size, s)
			}
		}
	})
}
