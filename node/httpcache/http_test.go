package httpcache

import (
	"errors"
	"net/http"
	"reflect"
	"testing"
	"time"
)

func TestCheckPreconditions(t *testing.T) {
	lm := date
	v := Validators{ETag: `"abc"`, LastModified: lm}
	weak := Validators{ETag: `W/"abc"`, LastModified: lm}
	tests := []struct {
		name   string
		method string
		req    http.Header
		v      Validators
		want   int
	}{
		{"none", "GET", http.Header{}, v, 0},
		{"If-None-Match matches", "GET", http.Header{"If-None-Match": {`"abc"`}}, v, 304},
		{"If-None-Match list", "GET", http.Header{"If-None-Match": {`"x", "abc"`}}, v, 304},
		{"If-None-Match weak comparison", "GET", http.Header{"If-None-Match": {`"abc"`}}, weak, 304},
		{"If-None-Match star", "HEAD", http.Header{"If-None-Match": {"*"}}, v, 304},
		{"If-None-Match differs", "GET", http.Header{"If-None-Match": {`"zzz"`}}, v, 0},
		{"If-None-Match wins over If-Modified-Since", "GET", http.Header{"If-None-Match": {`"zzz"`}, "If-Modified-Since": {lm.Format(http.TimeFormat)}}, v, 0},
		{"If-Modified-Since not modified", "GET", http.Header{"If-Modified-Since": {lm.Format(http.TimeFormat)}}, v, 304},
		{"If-Modified-Since modified", "GET", http.Header{"If-Modified-Since": {lm.Add(-time.Second).Format(http.TimeFormat)}}, v, 0},
		{"If-Modified-Since malformed", "GET", http.Header{"If-Modified-Since": {"yesterday"}}, v, 0},
		{"If-Match strong ok", "GET", http.Header{"If-Match": {`"abc"`}}, v, 0},
		{"If-Match fails", "GET", http.Header{"If-Match": {`"nope"`}}, v, 412},
		{"If-Match weak never matches", "GET", http.Header{"If-Match": {`W/"abc"`}}, weak, 412},
		{"If-Unmodified-Since fails", "GET", http.Header{"If-Unmodified-Since": {lm.Add(-time.Hour).Format(http.TimeFormat)}}, v, 412},
		{"If-Unmodified-Since ok", "GET", http.Header{"If-Unmodified-Since": {lm.Format(http.TimeFormat)}}, v, 0},
	}
	for _, tt := range tests {
		if got := CheckPreconditions(tt.method, tt.req, tt.v); got != tt.want {
			t.Errorf("%s: got %d, want %d", tt.name, got, tt.want)
		}
	}
}

func TestIfRange(t *testing.T) {
	v := Validators{ETag: `"abc"`, LastModified: date}
	for _, tt := range []struct {
		ir   string
		want bool
	}{
		{"", true},
		{`"abc"`, true},
		{`"old"`, false},
		{`W/"abc"`, false},
		{date.Format(http.TimeFormat), true},
		{date.Add(-time.Second).Format(http.TimeFormat), false},
		{"garbage", false},
	} {
		if got := IfRangeMatches(http.Header{"If-Range": {tt.ir}}, v); got != tt.want {
			t.Errorf("If-Range %q: got %v, want %v", tt.ir, got, tt.want)
		}
	}
}

func TestParseRange(t *testing.T) {
	tests := []struct {
		in   string
		size int64
		want []Range
		err  error
	}{
		{"bytes=0-99", 1000, []Range{{0, 100}}, nil},
		{"bytes=900-", 1000, []Range{{900, 100}}, nil},
		{"bytes=-100", 1000, []Range{{900, 100}}, nil},
		{"bytes=-5000", 1000, []Range{{0, 1000}}, nil},
		{"bytes=990-2000", 1000, []Range{{990, 10}}, nil},
		{"bytes=0-0,-1", 1000, []Range{{0, 1}, {999, 1}}, nil},
		{"bytes= 0-1 , 5-6", 1000, []Range{{0, 2}, {5, 2}}, nil},
		{"BYTES=0-1", 10, []Range{{0, 2}}, nil},
		{"bytes=1000-", 1000, nil, ErrUnsatisfiable},
		{"bytes=-0", 1000, nil, ErrUnsatisfiable},
		{"bytes=5-1", 1000, nil, ErrIgnoreRange},
		{"bytes=a-b", 1000, nil, ErrIgnoreRange},
		{"items=0-1", 1000, nil, ErrIgnoreRange},
		{"bytes=", 1000, nil, ErrIgnoreRange},
		{"bytes=0-1,1000-2000", 1000, []Range{{0, 2}}, nil},
		{"bytes=+1-2", 1000, nil, ErrIgnoreRange},
		// Overlapping ranges are merged, sorted (RFC 9110 §14.2): no amplification.
		{"bytes=0-,0-,0-", 1000, []Range{{0, 1000}}, nil},
		{"bytes=500-599,0-99,50-149", 1000, []Range{{0, 150}, {500, 100}}, nil},
		{"bytes=-100,0-", 1000, []Range{{0, 1000}}, nil},
		{"bytes=0-9,10-19", 1000, []Range{{0, 10}, {10, 10}}, nil},
		{"bytes=500-599,0-99", 1000, []Range{{500, 100}, {0, 100}}, nil},
	}
	for _, tt := range tests {
		got, err := ParseRange(tt.in, tt.size)
		if !errors.Is(err, tt.err) || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseRange(%q, %d) = %v, %v; want %v, %v", tt.in, tt.size, got, err, tt.want, tt.err)
		}
	}
	many := "bytes=0-0"
	for range MaxRanges {
		many += ",1-1"
	}
	if _, err := ParseRange(many, 10); !errors.Is(err, ErrIgnoreRange) {
		t.Errorf("%d ranges: err %v, want ErrIgnoreRange", MaxRanges+1, err)
	}
}

func TestCacheStatus(t *testing.T) {
	for _, tt := range []struct {
		s    Status
		want string
	}{
		{Status{Hit: true}, "meshcdn; hit"},
		{Status{Fwd: FwdURIMiss, FwdStatus: 200, Stored: true}, "meshcdn; fwd=uri-miss; fwd-status=200; stored"},
		{Status{Fwd: FwdBypass}, "meshcdn; fwd=bypass"},
		{Status{Fwd: FwdStale, FwdStatus: 304, Stored: true}, "meshcdn; fwd=stale; fwd-status=304; stored"},
		{Status{Fwd: FwdURIMiss, FwdStatus: 200, Stored: true, Collapsed: true}, "meshcdn; fwd=uri-miss; fwd-status=200; stored; collapsed"},
		{Status{Fwd: FwdBypass, Detail: "hit-for-pass"}, "meshcdn; fwd=bypass; detail=hit-for-pass"},
	} {
		if got := tt.s.String(); got != tt.want {
			t.Errorf("%+v: %q, want %q", tt.s, got, tt.want)
		}
	}
}

func TestParseCacheControlQuoted(t *testing.T) {
	d := ParseDirectives(`no-cache="Set-Cookie, X-A", private="x-b", max-age=5, ext="a,b", s-maxage="10"`)
	if !reflect.DeepEqual(d.NoCacheFields, []string{"set-cookie", "x-a"}) || !reflect.DeepEqual(d.PrivateFields, []string{"x-b"}) {
		t.Errorf("fields: %v %v", d.NoCacheFields, d.PrivateFields)
	}
	if d.NoCache || d.Private || d.MaxAge != 5 || d.SMaxAge != 10 {
		t.Errorf("directives: %+v", d)
	}
	h := http.Header{"Set-Cookie": {"a"}, "X-A": {"1"}, "X-B": {"2"}, "X-C": {"3"}}
	StripFields(h, d)
	if len(h) != 1 || h.Get("X-C") != "3" {
		t.Errorf("StripFields left %v", h)
	}
}

func TestUpdateStored(t *testing.T) {
	stored := http.Header{"Content-Type": {"text/css"}, "Cache-Control": {"max-age=1"}, "Etag": {`"a"`}}
	got := UpdateStored(stored, http.Header{"Cache-Control": {"max-age=60"}, "Content-Type": {"text/plain"}, "X-New": {"1"}})
	if got.Get("Cache-Control") != "max-age=60" || got.Get("Content-Type") != "text/css" || got.Get("X-New") != "1" {
		t.Errorf("UpdateStored = %v", got)
	}
	if stored.Get("Cache-Control") != "max-age=1" {
		t.Error("UpdateStored changed the stored header")
	}
}

func TestRemoveHopByHop(t *testing.T) {
	h := http.Header{"Connection": {"close, X-Hop"}, "X-Hop": {"1"}, "Keep-Alive": {"t=1"}, "Transfer-Encoding": {"chunked"}, "X-End": {"1"}}
	RemoveHopByHop(h)
	if len(h) != 1 || h.Get("X-End") != "1" {
		t.Errorf("left %v", h)
	}
}
