package slice

import (
	"errors"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/node/cache"
)

func TestKey(t *testing.T) {
	s := Spec{Size: 1 << 20, Index: 23}
	k := s.Key("www.example.com/v/a.mp4")
	if cache.BaseKey(k) != "www.example.com/v/a.mp4" {
		t.Fatalf("BaseKey(%q) is not the object's key: a purge would miss the slice", k)
	}
	base, got, ok := FromKey(k)
	if !ok || base != "www.example.com/v/a.mp4" || got != s {
		t.Fatalf("FromKey(%q) = %q, %+v, %v", k, base, got, ok)
	}
	if (Spec{Size: 2 << 20, Index: 23}).Key("www.example.com/v/a.mp4") == k {
		t.Error("slices of two sizes share a key")
	}
	for _, k := range []string{"www.example.com/v/a.mp4", cache.CodingKey("x/a", "br"), "x/a\x00slice/1048576", "x/a\x00slice/12/1", "x/a\x00slice/1048576/-1"} {
		if _, _, ok := FromKey(k); ok {
			t.Errorf("FromKey(%q) took it for a slice's key", k)
		}
	}
}

func TestSpec(t *testing.T) {
	s := Spec{Size: 1 << 20, Index: 2}
	if s.Range() != "bytes=2097152-3145727" {
		t.Errorf("Range() = %q", s.Range())
	}
	if Count(0, 1<<20) != 0 || Count(1, 1<<20) != 1 || Count(1<<20, 1<<20) != 1 || Count(1<<20+1, 1<<20) != 2 {
		t.Error("Count")
	}
	if f, l := Covering(1<<20-1, 2, 1<<20); f != 0 || l != 1 {
		t.Errorf("Covering across a boundary: %d-%d", f, l)
	}
	if f, l := Covering(24<<20-100, 100, 1<<20); f != 23 || l != 23 {
		t.Errorf("Covering the last 100 bytes: %d-%d", f, l)
	}
	for _, bad := range []Spec{{Size: 1000}, {Size: 1 << 30}, {Size: 1 << 20, Index: -1}, {Size: 1 << 20, Index: 1 << 50}} {
		if bad.Valid() {
			t.Errorf("%+v is valid", bad)
		}
	}
}

func TestCheck(t *testing.T) {
	s := Spec{Size: 1 << 20, Index: 1}
	if total, err := s.Check("bytes 1048576-2097151/25165824"); err != nil || total != 25165824 {
		t.Errorf("a whole slice: %d, %v", total, err)
	}
	if total, err := s.Check("bytes 1048576-1048675/1048676"); err != nil || total != 1048676 {
		t.Errorf("the last, short slice: %d, %v", total, err)
	}
	for _, cr := range []string{
		"bytes 0-1048575/25165824",       // another slice
		"bytes 1048576-1048676/25165824", // short of the slice's end, not the object's
		"bytes 1048576-2097152/25165824", // past it
	} {
		if _, err := s.Check(cr); !errors.Is(err, ErrMismatch) {
			t.Errorf("Check(%q) = %v, want ErrMismatch", cr, err)
		}
	}
	for _, cr := range []string{"", "bytes */25165824", "bytes 1048576-2097151/*", "items 1-2/3", "bytes 5-4/10",
		"bytes 0-10/10", "bytes -1-2/10", "bytes 1048576-2097151/99999999999999999999"} {
		if _, err := s.Check(cr); err == nil || errors.Is(err, ErrMismatch) {
			t.Errorf("Check(%q) = %v, want a parse error", cr, err)
		}
	}
}

func TestVersion(t *testing.T) {
	lm := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	a := Version{ETag: `"v1"`, LastModified: lm, Total: 100}
	if !a.Same(Version{ETag: `"v1"`, LastModified: lm.Add(time.Second), Total: 100}) {
		t.Error("the same ETag is another version")
	}
	for _, b := range []Version{{ETag: `"v2"`, LastModified: lm, Total: 100}, {ETag: `"v1"`, LastModified: lm, Total: 101}, {LastModified: lm, Total: 100}} {
		if a.Same(b) {
			t.Errorf("%+v is the same version as %+v", b, a)
		}
	}
	if !(Version{LastModified: lm, Total: 5}).Same(Version{LastModified: lm, Total: 5}) {
		t.Error("the same Last-Modified without ETags is another version")
	}
	if (Version{LastModified: lm, Total: 5}).Same(Version{LastModified: lm.Add(time.Second), Total: 5}) {
		t.Error("another Last-Modified is the same version")
	}
}

func TestMemo(t *testing.T) {
	now := time.Unix(1700000000, 0)
	m := NewMemo(time.Minute, 2)
	if m.Has("a", now) {
		t.Fatal("an empty memo has a")
	}
	if !m.Mark("a", now) || m.Mark("a", now.Add(time.Second)) {
		t.Fatal("Mark reports a name new only the first time")
	}
	if !m.Has("a", now.Add(time.Minute-time.Nanosecond)) || m.Has("a", now.Add(61*time.Second)) {
		t.Fatal("a is remembered for a minute after its last mark, then forgotten")
	}
	if !m.Mark("a", now.Add(2*time.Minute)) {
		t.Fatal("a name forgotten is new again")
	}
	m.Mark("b", now.Add(2*time.Minute))
	m.Mark("c", now.Add(2*time.Minute)) // full: one of a and b goes
	n := 0
	for _, k := range []string{"a", "b", "c"} {
		if m.Has(k, now.Add(2*time.Minute)) {
			n++
		}
	}
	if n != 2 || !m.Has("c", now.Add(2*time.Minute)) {
		t.Fatalf("a memo bounded to 2 holds %d names, c among them: %v", n, m.Has("c", now.Add(2*time.Minute)))
	}
	m.Mark("d", now.Add(5*time.Minute)) // the others have expired: all go
	if len(m.until) != 1 {
		t.Fatalf("expired names stay: %v", m.until)
	}
}
