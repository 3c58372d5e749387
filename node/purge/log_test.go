package purge

import (
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/meshcdn/meshcdn/node/cache"
	peerv1 "github.com/meshcdn/meshcdn/proto/meshcdn/peer/v1"
)

func purgeAt(id string, at time.Time, keys ...string) *peerv1.PurgeRequest {
	return &peerv1.PurgeRequest{Id: id, Keys: keys, Issued: timestamppb.New(at)}
}

func TestPurgeLogPagesAndCursors(t *testing.T) {
	l := NewLog()
	t0 := time.Now()
	for i := range 2500 {
		if !l.Add(purgeAt(fmt.Sprint("p", i), t0, "k")) {
			t.Fatalf("record %d refused", i)
		}
	}
	if l.Add(purgeAt("p7", t0, "k")) {
		t.Fatal("a known purge id was added twice")
	}
	// A reader without a cursor pages through everything, in order.
	var got []uint64
	inc, after := uint64(0), uint64(0)
	for {
		recs, more, truncated := l.Since(inc, after)
		if !truncated.IsZero() {
			t.Fatalf("nothing was dropped, yet truncated %v", truncated)
		}
		if len(recs) > pageLen {
			t.Fatalf("page of %d records", len(recs))
		}
		for _, r := range recs {
			got = append(got, r.GetSeq())
		}
		inc, after = l.Incarnation(), recs[len(recs)-1].GetSeq()
		if !more {
			break
		}
	}
	if len(got) != 2500 || got[0] != 1 || got[2499] != 2500 {
		t.Fatalf("read %d records, first %d last %d", len(got), got[0], got[len(got)-1])
	}
	if recs, more, _ := l.Since(inc, after); len(recs) != 0 || more {
		t.Fatalf("a reader at the end got %d records, more=%v", len(recs), more)
	}
	// A cursor from another incarnation (the node restarted) reads from the start.
	if recs, _, _ := l.Since(inc+2, after); len(recs) == 0 || recs[0].GetSeq() != 1 {
		t.Fatal("a stale incarnation did not restart the read")
	}
}

func TestPurgeLogTruncation(t *testing.T) {
	l := NewLog()
	t0 := time.Now().Add(-time.Hour)
	for i := range logRecords + 10 {
		l.Add(purgeAt(fmt.Sprint("p", i), t0.Add(time.Duration(i)*time.Millisecond), "k"))
	}
	if n := len(l.All()); n != logRecords {
		t.Fatalf("log holds %d records, bound %d", n, logRecords)
	}
	lastDropped := t0.Add(9 * time.Millisecond)
	_, _, truncated := l.Since(0, 0)
	if !truncated.Equal(lastDropped) {
		t.Fatalf("a reader from the start: truncated %v, want %v", truncated, lastDropped)
	}
	_, _, truncated = l.Since(l.Incarnation(), 5)
	if !truncated.Equal(lastDropped) {
		t.Fatal("a cursor behind the oldest kept record was not told of the gap")
	}
	if _, _, truncated = l.Since(l.Incarnation(), 10); !truncated.IsZero() {
		t.Fatal("a cursor right before the oldest kept record was told of a gap")
	}
	// A dropped id may be applied again (bounded by its time, so harmless).
	if !l.Add(purgeAt("p0", t0, "k")) {
		t.Fatal("a dropped id is still remembered")
	}
	// One huge purge cannot hold the log's items over its bound for long.
	big := make([]string, logItems)
	for i := range big {
		big[i] = fmt.Sprint("key", i)
	}
	l.Add(purgeAt("big", t0, big...))
	l.Add(purgeAt("after", t0, "k"))
	if recs := l.All(); len(recs) != 1 || recs[0].GetPurge().GetId() != "after" {
		t.Fatalf("log kept %d records over the item bound", len(recs))
	}
}

func TestSetMatch(t *testing.T) {
	issued := time.Now().Add(-time.Minute)
	s := NewSet()
	s.Add(&peerv1.PurgeRequest{Id: "a", Keys: []string{"h/a"}, KeyPrefixes: []string{"h/img/"}, Tags: []string{"blue"},
		Issued: timestamppb.New(issued)})
	entry := func(age time.Duration, hdr ...string) *cache.Entry {
		h := http.Header{}
		for i := 0; i < len(hdr); i += 2 {
			h.Add(hdr[i], hdr[i+1])
		}
		return &cache.Entry{ResponseTime: issued.Add(-age), Header: h}
	}
	for _, c := range []struct {
		key  string
		e    *cache.Entry
		want bool
	}{
		{"h/a", entry(time.Second), true},          // fetched before the purge
		{"h/a", entry(-time.Second), true},         // within the clock-skew margin
		{"h/a", entry(-time.Minute / 2), false},    // fetched well after: kept
		{"h/img/x.png", entry(time.Second), true},  // prefix
		{"h/css/x.css", entry(time.Second), false}, // unrelated
		{"h/b", entry(time.Second, "Surrogate-Key", "red blue"), true},
		{"h/b", entry(time.Second, "Cache-Tag", "red, blue"), true},
		{"h/b", entry(time.Second, "Cache-Tag", "red,green"), false},
		{"h/b", entry(-time.Minute/2, "Surrogate-Key", "blue"), false},
	} {
		if got := s.Match(c.key, c.e); got != c.want {
			t.Errorf("match(%s, fetched %v after the purge, %v) = %v", c.key, c.e.ResponseTime.Sub(issued), c.e.Header, got)
		}
	}
	all := NewSet()
	all.Before = issued
	if !all.Match("x", entry(time.Second)) || all.Match("x", entry(-time.Second)) {
		t.Error("a truncation bound matches what was fetched before it, only")
	}
}

// A purge issued in the future (or with no issue time) is logged as issued
// when it arrived: it cannot keep a node from storing what it fetches next.
func TestFutureIssueTimeIsBounded(t *testing.T) {
	l := NewLog()
	now := time.Now()
	l.Add(purgeAt("future", now.Add(24*time.Hour), "h/a"))
	l.Add(&peerv1.PurgeRequest{Id: "none", Keys: []string{"h/b"}})
	for _, r := range l.All() {
		if got := r.GetPurge().GetIssued().AsTime(); got.Before(now) || got.After(time.Now()) {
			t.Errorf("%s logged as issued at %v; want its arrival", r.GetPurge().GetId(), got)
		}
	}
	later := &cache.Entry{ResponseTime: time.Now().Add(time.Minute)}
	if l.Covers("h/a", later, nil) {
		t.Error("an object fetched after a future-dated purge arrived is taken for purged")
	}
	if !l.Covers("h/a", &cache.Entry{ResponseTime: now.Add(-time.Minute)}, nil) {
		t.Error("an object fetched before the purge is not covered")
	}
	skewed := now.Add(Skew / 2)
	l.Add(purgeAt("skewed", skewed, "h/c"))
	if got := l.All()[2].GetPurge().GetIssued().AsTime(); !got.Equal(skewed) {
		t.Errorf("a purge within the clock skew was moved to %v", got)
	}
}

// TestVouch: a node vouches for the purges of an object that it applied
// before the object's response arrived, and only those that match it;
// whoever it vouches to passes them over, whatever the clocks say, and
// still heeds the others.
func TestVouch(t *testing.T) {
	owner, asker := NewLog(), NewLog()
	issued := time.Now()
	p := purgeAt("p1", issued, "h/a")
	other := purgeAt("p2", issued, "h/b")
	for _, l := range []*Log{owner, asker} {
		l.Add(p)
		l.Add(other)
	}
	// The owner refilled h/a right after applying p1: within the clock
	// allowance, so by the clocks alone the asker cannot order them.
	refilled := &cache.Entry{ResponseTime: time.Now().Add(time.Millisecond)}
	if !asker.Covers("h/a", refilled, nil) {
		t.Fatal("a copy fetched within Skew of a purge is not suspected without a voucher")
	}
	vouched := owner.Vouch("h/a", refilled)
	if !slices.Equal(vouched, []string{"p1"}) {
		t.Fatalf("vouched %v; want [p1]", vouched)
	}
	if asker.Covers("h/a", refilled, vouched) || asker.Predates("h/a", refilled, vouched) {
		t.Error("a vouched purge still refuses the copy")
	}
	// An object whose response arrived before the owner applied the purge
	// is not vouched for.
	before := &cache.Entry{ResponseTime: issued.Add(-time.Second)}
	if v := owner.Vouch("h/a", before); len(v) != 0 {
		t.Errorf("vouched %v for a response older than the purge", v)
	}
	// A purge the owner has not applied is still heeded.
	late := purgeAt("p3", time.Now(), "h/a")
	asker.Add(late)
	if !asker.Covers("h/a", &cache.Entry{ResponseTime: time.Now()}, owner.Vouch("h/a", refilled)) {
		t.Error("a purge the owner never applied was passed over")
	}
}
