package cache

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

func entry(size int, varyKey string, vary ...string) *Entry {
	return &Entry{Status: 200, Body: make([]byte, size), Size: int64(size), VaryKey: varyKey, Vary: vary,
		ResponseTime: time.Now(), TTL: time.Hour}
}

// TestMemoryBudget: the tier never holds more than its budget plus the entry
// being written, and counts what it evicts.
func TestMemoryBudget(t *testing.T) {
	const budget = 1 << 20
	m := NewMemory(budget)
	defer m.Close()
	largest := uint64(0)
	for i := range 2000 {
		e := entry(1000+(i%7)*3000, "")
		w := uint64(len("/k/"+strconv.Itoa(i))) + uint64((&Object{Variants: []*Entry{e}}).weight())
		largest = max(largest, w)
		m.Put("/k/"+strconv.Itoa(i), e)
		if st := m.Stats(); st.Bytes > budget+largest {
			t.Fatalf("after %d puts: %d bytes held, budget %d + largest entry %d", i+1, st.Bytes, budget, largest)
		}
	}
	st := m.Stats()
	if st.Evictions == 0 || st.Objects == 0 || st.Objects >= 2000 {
		t.Errorf("stats %+v: want evictions and a bounded object count", st)
	}
}

func TestVariants(t *testing.T) {
	m := NewMemory(1 << 20)
	defer m.Close()
	m.Put("k", entry(1, "lang=en\n", "Accept-Language"))
	m.Put("k", entry(2, "lang=fr\n", "Accept-Language"))
	m.Put("k", entry(3, "lang=en\n", "Accept-Language")) // replaces en
	o, _ := m.Get("k")
	if len(o.Variants) != 2 || o.Variants[0].VaryKey != "lang=fr\n" || len(o.Variants[1].Body) != 3 {
		t.Fatalf("variants %+v", o.Variants)
	}
	m.Put("k", entry(4, "")) // the origin stopped varying: old variants go
	if o, _ = m.Get("k"); len(o.Variants) != 1 || len(o.Variants[0].Body) != 4 {
		t.Fatalf("after Vary changed: %+v", o.Variants)
	}
	for i := range MaxVariants + 5 {
		m.Put("many", entry(1, strconv.Itoa(i), "X"))
	}
	if o, _ = m.Get("many"); len(o.Variants) != MaxVariants || o.Variants[MaxVariants-1].VaryKey != strconv.Itoa(MaxVariants+4) {
		t.Fatalf("%d variants kept, last %q", len(o.Variants), o.Variants[len(o.Variants)-1].VaryKey)
	}
	m.MarkPass("k", time.Now().Add(time.Minute))
	if o, _ = m.Get("k"); !o.Pass(time.Now()) || len(o.Variants) != 0 {
		t.Fatalf("pass mark %+v", o)
	}
	if !m.Invalidate("k") || m.Invalidate("k") {
		t.Fatal("Invalidate")
	}
}

// TestFillReadWhileWrite: readers at any offset see the bytes as they are
// appended, and the complete body at the end.
func TestFillReadWhileWrite(t *testing.T) {
	f := NewFill()
	ctx := context.Background()
	var wg sync.WaitGroup
	got := make([][]byte, 4)
	for i := range got {
		wg.Go(func() {
			if _, err := f.Head(ctx); err != nil {
				t.Error(err)
				return
			}
			var off int64 = int64(i)
			for {
				p, err := f.Next(ctx, off)
				if errors.Is(err, io.EOF) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				got[i] = append(got[i], p...)
				off += int64(len(p))
			}
		})
	}
	f.SetHead(&Entry{Status: 200, Size: -1}, 0, false)
	for i := range 100 {
		_ = f.Append(ctx, []byte{byte(i)})
	}
	f.Finish(nil)
	wg.Wait()
	for i, g := range got {
		if len(g) != 100-i || (len(g) > 0 && g[0] != byte(i)) {
			t.Errorf("reader %d got %d bytes", i, len(g))
		}
	}
	if b := f.Bytes(); len(b) != 100 {
		t.Errorf("Bytes: %d", len(b))
	}
}

func TestFillAbort(t *testing.T) {
	f := NewFill()
	cause := errors.New("connection reset")
	f.SetHead(&Entry{Status: 200}, 10, false)
	_ = f.Append(context.Background(), []byte("abc"))
	f.Finish(cause)
	if _, err := f.Next(context.Background(), 0); !errors.Is(err, ErrFillAborted) || !errors.Is(err, cause) {
		t.Fatalf("Next after abort: %v", err)
	}
	g := NewFill()
	g.Finish(cause)
	if _, err := g.Head(context.Background()); !errors.Is(err, cause) {
		t.Fatalf("Head after abort: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := NewFill().Head(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Head with cancelled context: %v", err)
	}
}

// TestFillStreamWindow: a streamed fill's writer waits for its one reader, and
// stops when the reader abandons it.
func TestFillStreamWindow(t *testing.T) {
	synctest.Test(t, testFillStreamWindow)
}

func testFillStreamWindow(t *testing.T) {
	f := NewFill()
	f.SetHead(&Entry{Status: 200}, 0, true)
	ctx := context.Background()
	chunk := make([]byte, StreamWindow)
	if err := f.Append(ctx, chunk); err != nil {
		t.Fatal(err)
	}
	blocked := make(chan error, 1)
	go func() { blocked <- f.Append(ctx, []byte("more")) }()
	synctest.Wait() // the writer is now durably blocked, or done
	select {
	case err := <-blocked:
		t.Fatalf("writer ran past the window: %v", err)
	default:
	}
	p, _ := f.Next(ctx, 0)
	f.Consumed(int64(len(p)))
	if err := <-blocked; err != nil {
		t.Fatal(err)
	}
	if b, _ := f.Next(ctx, StreamWindow); string(b) != "more" {
		t.Fatalf("after window: %q", b)
	}
	go func() { blocked <- f.Append(ctx, chunk) }()
	go func() { blocked <- f.Append(ctx, chunk) }()
	f.Abandon()
	for range 2 {
		if err := <-blocked; err != nil && !errors.Is(err, ErrAbandoned) {
			t.Fatal(err)
		}
	}
	if err := f.Append(ctx, []byte("x")); !errors.Is(err, ErrAbandoned) {
		t.Fatalf("Append after Abandon: %v", err)
	}
}

// TestFillStreamSkip: a streamed fill's reader that starts past the window
// (a Range in the middle of an unstored object) gets its bytes: the writer
// does not wait for the bytes before it to be read.
func TestFillStreamSkip(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := NewFill()
		f.SetHead(&Entry{Status: 200}, 0, true)
		ctx := context.Background()
		done := make(chan error, 1)
		go func() {
			for i := range 4 {
				if err := f.Append(ctx, bytes.Repeat([]byte{byte('a' + i)}, StreamWindow)); err != nil {
					done <- err
					return
				}
			}
			f.Finish(nil)
			done <- nil
		}()
		off := int64(3*StreamWindow + 10)
		p, err := f.Next(ctx, off)
		if err != nil || len(p) == 0 || p[0] != 'd' {
			t.Fatalf("Next at %d: %v, %d bytes", off, err, len(p))
		}
		f.Consumed(off + int64(len(p)))
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

// TestHottest: keys come back bounded by the limit, the often read ahead of
// the never read.
func TestHottest(t *testing.T) {
	m := NewMemory(64 << 10) // about one and a half times what the test stores
	defer m.Close()
	for i := range 100 {
		m.Put("/k/"+strconv.Itoa(i), entry(100, ""))
	}
	for range 50 {
		m.Get("/k/7")
	}
	if keys := m.Hottest(1000); len(keys) != 100 {
		t.Fatalf("Hottest(1000) gave %d keys, want all 100", len(keys))
	}
	keys := m.Hottest(10)
	if len(keys) != 10 {
		t.Fatalf("Hottest(10) gave %d keys", len(keys))
	}
	if !slices.Contains(keys, "/k/7") {
		t.Errorf("the key read 50 times is not among the 10 hottest: %v", keys)
	}
}
