package budget

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// TestConcurrency: 40 requests through a budget of 4 all get a slot, never
// more than 4 at once.
func TestConcurrency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var observed atomic.Int64
		b := New(Limits{Concurrency: 4}, time.Minute, func(c Class, waited time.Duration) {
			if c == Client && waited >= 0 {
				observed.Add(1)
			}
		})
		defer b.Close()
		var now, most atomic.Int64
		var wg sync.WaitGroup
		for range 40 {
			wg.Go(func() {
				release, err := b.Acquire(t.Context(), Client)
				if err != nil {
					t.Error(err)
					return
				}
				n := now.Add(1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				time.Sleep(100 * time.Millisecond) // the origin's answer, in the bubble's time
				now.Add(-1)
				release()
			})
		}
		wg.Wait()
		if most.Load() != 4 || observed.Load() != 40 {
			t.Errorf("at most %d in flight, want 4; %d waits observed, want 40", most.Load(), observed.Load())
		}
		if b.Inflight() != 0 || b.Waiting() != 0 {
			t.Errorf("after all: %d in flight, %d waiting", b.Inflight(), b.Waiting())
		}
		body := io.NopCloser(bytes.NewReader(nil))
		if b.Body(t.Context(), body) != body {
			t.Error("without a bandwidth limit, Body wraps the body")
		}
	})
}

// TestOrder: a freed slot goes to a client's fill before a revalidation
// before background work, each class in its order of arrival.
func TestOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Limits{Concurrency: 1}, time.Minute, nil)
		defer b.Close()
		hold, err := b.Acquire(t.Context(), Client)
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var got []string
		var wg sync.WaitGroup
		for _, w := range []struct {
			c    Class
			name string
		}{{Background, "bg1"}, {Revalidation, "reval1"}, {Client, "client1"}, {Background, "bg2"}, {Client, "client2"}} {
			wg.Go(func() {
				release, err := b.Acquire(t.Context(), w.c)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				got = append(got, w.name)
				mu.Unlock()
				release()
			})
			synctest.Wait() // queued before the next
		}
		if b.Waiting() != 5 {
			t.Fatalf("%d waiting, want 5", b.Waiting())
		}
		hold()
		wg.Wait()
		want := []string{"client1", "client2", "reval1", "bg1", "bg2"}
		if len(got) != len(want) {
			t.Fatalf("granted %v", got)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("granted %v, want %v", got, want)
			}
		}
	})
}

// TestQueueTimeout: a request that finds no slot within the queue timeout
// fails with ErrQueueTimeout and leaves the queue; a cancelled one with
// its context's cause; after Close, ErrClosed.
func TestQueueTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Limits{Concurrency: 1}, 10*time.Second, nil)
		hold, _ := b.Acquire(t.Context(), Client)
		start := time.Now()
		_, err := b.Acquire(t.Context(), Client)
		if !errors.Is(err, ErrQueueTimeout) || time.Since(start) != 10*time.Second {
			t.Fatalf("after %v: %v", time.Since(start), err)
		}
		ctx, cancel := context.WithCancelCause(t.Context())
		cause := errors.New("client left")
		time.AfterFunc(time.Second, func() { cancel(cause) })
		if _, err := b.Acquire(ctx, Client); !errors.Is(err, cause) {
			t.Fatalf("cancelled: %v", err)
		}
		if b.Waiting() != 0 {
			t.Fatalf("%d still waiting", b.Waiting())
		}
		done := make(chan error, 1)
		go func() { _, err := b.Acquire(t.Context(), Client); done <- err }()
		synctest.Wait()
		b.Close()
		if err := <-done; !errors.Is(err, ErrClosed) {
			t.Fatalf("waiting at Close: %v", err)
		}
		hold()
	})
}

// TestRate: 1000 requests through a budget of 200 a second take five
// seconds, less the burst a quiet budget allows at once.
func TestRate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Limits{Rate: 200}, time.Minute, nil)
		defer b.Close()
		start := time.Now()
		var wg sync.WaitGroup
		for range 1000 {
			wg.Go(func() {
				release, err := b.Acquire(t.Context(), Client)
				if err != nil {
					t.Error(err)
					return
				}
				release()
			})
		}
		wg.Wait()
		wantWithin10(t, "1000 starts", time.Since(start), float64(1000-burst(200, 1))/200)
	})
}

// TestBandwidth: a 5 MB body read through a budget of 1 MB/s takes five
// seconds, less the burst.
func TestBandwidth(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Limits{Bandwidth: 1e6}, time.Minute, nil)
		defer b.Close()
		start := time.Now()
		n, err := io.Copy(io.Discard, b.Body(t.Context(), io.NopCloser(bytes.NewReader(make([]byte, 5e6)))))
		if err != nil || n != 5e6 {
			t.Fatal(n, err)
		}
		wantWithin10(t, "5 MB", time.Since(start), (5e6-float64(burst(1e6, minChunk)))/1e6)
	})
}

// wantWithin10 fails unless took is within 10% of want seconds.
func wantWithin10(t *testing.T, what string, took time.Duration, want float64) {
	t.Helper()
	if got := took.Seconds(); math.Abs(got-want) > want/10 {
		t.Errorf("%s took %.2f s, want %.2f s within 10%%", what, got, want)
	}
}

// TestSetLimits: a lease that shrinks lets the requests in flight finish
// and starts none until they are under the new concurrency; one that
// grows starts the waiting at once.
func TestSetLimits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Limits{Concurrency: 3}, time.Minute, nil)
		defer b.Close()
		var held []func()
		for range 3 {
			r, _ := b.Acquire(t.Context(), Client)
			held = append(held, r)
		}
		b.SetLimits(Limits{Concurrency: 1})
		granted := make(chan func(), 2)
		for range 2 {
			go func() {
				r, err := b.Acquire(t.Context(), Client)
				if err != nil {
					t.Error(err)
				}
				granted <- r
			}()
		}
		synctest.Wait()
		held[0]()
		held[1]()
		synctest.Wait()
		if len(granted) != 0 || b.Inflight() != 1 {
			t.Fatalf("with one of a share of one in flight: %d granted, %d in flight", len(granted), b.Inflight())
		}
		held[2]()
		synctest.Wait()
		if len(granted) != 1 {
			t.Fatalf("%d granted once none was in flight, want 1", len(granted))
		}
		b.SetLimits(Limits{Concurrency: 2})
		synctest.Wait()
		if len(granted) != 2 {
			t.Fatalf("%d granted after the share grew, want 2", len(granted))
		}
		(<-granted)()
		(<-granted)()
	})
}

// TestShare: under a lease, a limit the configuration sets is the share's,
// and a share of zero lets nothing start and no body byte through until the
// next lease; a limit the configuration leaves off stays off. A request
// that has to wait says so (OnWait).
func TestShare(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Limits{Concurrency: 4, Bandwidth: 1 << 20}, time.Minute, nil)
		defer b.Close()
		var waits atomic.Int64
		b.OnWait(func() { waits.Add(1) })
		b.SetShare(Limits{Concurrency: 0, Rate: 5, Bandwidth: 0})
		if s, ok := b.Share(); !ok || s.Concurrency != 0 {
			t.Fatalf("Share() = %+v, %v", s, ok)
		}
		got := make(chan func(), 1)
		go func() {
			release, err := b.Acquire(t.Context(), Client)
			if err != nil {
				t.Error(err)
			}
			got <- release
		}()
		synctest.Wait()
		if len(got) != 0 || waits.Load() != 1 {
			t.Fatalf("with a share of no requests: granted %d, waits told %d; want 0 and 1", len(got), waits.Load())
		}
		if in, w := b.Demand(); in != 0 || w != 1 {
			t.Fatalf("Demand() = %d, %d; want 0 in flight, 1 waiting", in, w)
		}
		b.SetShare(Limits{Concurrency: 1})
		release := <-got // the configuration sets no rate: the share's 5/s does not apply
		defer release()

		body := b.Body(t.Context(), io.NopCloser(bytes.NewReader(make([]byte, 64<<10))))
		read := make(chan int)
		go func() {
			n, _ := io.Copy(io.Discard, body)
			read <- int(n)
		}()
		synctest.Wait()
		select {
		case n := <-read:
			t.Fatalf("read %d bytes with a share of no bandwidth", n)
		default:
		}
		start := time.Now()
		b.SetShare(Limits{Concurrency: 1, Bandwidth: 32 << 10})
		if n := <-read; n != 64<<10 {
			t.Fatalf("read %d bytes", n)
		}
		// 16 KiB of burst, then 48 KiB at 32 KiB/s.
		if d := time.Since(start); d < time.Second || d > 2*time.Second {
			t.Errorf("64 KiB at 32 KiB/s took %v; want about 1.5 s", d)
		}
	})
}
