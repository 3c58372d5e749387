package cache

import (
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
)

// TestRendered: a stored entry, in memory or on disk (written or loaded),
// is rendered once however many responses ask for it at once; an entry
// not stored is rendered on every call; a copy of a stored entry, whose
// fields may differ, never gets the original's form.
func TestRendered(t *testing.T) {
	var calls atomic.Int64
	render := func(e *Entry) any {
		calls.Add(1)
		return e.Header.Get("X-Version")
	}
	concurrently := func(e *Entry) {
		t.Helper()
		calls.Store(0)
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range 100 {
					if v := e.Rendered(render); v != e.Header.Get("X-Version") {
						t.Errorf("rendered %v", v)
					}
				}
			})
		}
		wg.Wait()
	}
	e := &Entry{Status: 200, Header: http.Header{"X-Version": {"1"}}, Body: []byte("body"), Size: 4}
	e.Rendered(render)
	e.Rendered(render)
	if calls.Load() != 2 {
		t.Errorf("an entry not stored was rendered %d times for 2 calls", calls.Load())
	}

	m := NewMemory(1 << 20)
	m.Put("k", e)
	concurrently(e)
	if calls.Load() != 1 {
		t.Errorf("a stored entry was rendered %d times", calls.Load())
	}
	c := *e
	c.Header = http.Header{"X-Version": {"2"}}
	if v := c.Rendered(render); v != "2" {
		t.Errorf("a copy with other fields got %v", v)
	}
	dir := t.TempDir()
	d := openDisk(t, dir, 1<<20)
	if err := d.Put("k", diskEntry("body", "")); err != nil {
		t.Fatal(err)
	}
	concurrently(d.Get("k")[0].Entry)
	if calls.Load() != 1 {
		t.Errorf("an entry written to disk was rendered %d times", calls.Load())
	}
	concurrently(openDisk(t, dir, 1<<20).Get("k")[0].Entry)
	if calls.Load() != 1 {
		t.Errorf("an entry loaded from disk was rendered %d times", calls.Load())
	}
}
