package main

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/internal/testutil"
)

// TestMemoryBudget: an edge process with a 256 MiB memory budget, sent
// 400 MiB of distinct objects (400 of 1 MiB, then, in another process,
// 10,000 of 40 KiB), stays under 1.5 × budget + 64 MiB of peak resident
// memory: the runtime's memory limit follows the budget. The race
// detector multiplies memory, so `make unit` runs it without.
func TestMemoryBudget(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector multiplies memory; make unit runs this test without it")
	}
	const budget = 256 << 20
	for _, c := range []struct {
		name  string
		count int
		size  int
	}{{"1MiB", 400, 1 << 20}, {"40KiB", 10000, 40 << 10}} {
		t.Run(c.name, func(t *testing.T) {
			origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Cache-Control", "public, max-age=3600")
				w.Header().Set("Content-Length", strconv.Itoa(c.size))
				line := []byte(r.URL.Path + strings.Repeat(".", 63) + "\n")[:64]
				for written := 0; written < c.size; written += len(line) {
					_, _ = w.Write(line[:min(len(line), c.size-written)])
				}
			}))
			defer origin.Close()
			e := startEdgeProc(t, "--origin", origin.URL, "--memory", "256MiB", "--gossip", "off")
			// Long bodies are kept in memory files, outside the resident
			// set: their peak is sampled and added to it.
			var files atomic.Int64
			sampled := make(chan struct{})
			stop := make(chan struct{})
			go func() {
				defer close(sampled)
				tick := time.NewTicker(20 * time.Millisecond)
				defer tick.Stop()
				for {
					if m := testutil.MemFiles(e.cmd.Process.Pid); m > files.Load() {
						files.Store(m)
					}
					select {
					case <-stop:
						return
					case <-tick.C:
					}
				}
			}()
			var wg sync.WaitGroup
			var failed sync.Map
			for w := range 4 {
				wg.Go(func() {
					for i := w; i < c.count; i += 4 {
						resp, err := http.Get(fmt.Sprintf("%s/obj/%d.bin", e.http, i))
						if err != nil {
							failed.Store(i, err)
							continue
						}
						n, _ := io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if n != int64(c.size) {
							failed.Store(i, n)
						}
					}
				})
			}
			wg.Wait()
			failed.Range(func(k, v any) bool {
				t.Errorf("object %v: %v", k, v)
				return false
			})
			close(stop)
			<-sampled
			rss := testutil.PeakRSS(t, e.cmd.Process.Pid)
			peak := rss + files.Load()
			bound := int64(budget + budget/2 + 64<<20)
			t.Logf("%d objects of %d bytes through a 256 MiB budget: peak RSS %d MiB and memory files %d MiB (bound %d MiB)",
				c.count, c.size, rss>>20, files.Load()>>20, bound>>20)
			if peak > bound {
				t.Errorf("peak memory %d MiB over %d MiB", peak>>20, bound>>20)
			}
		})
	}
}

// TestGCFloor: an edge raises GOGC while little is live, unless GOGC is
// set, and gives the percentage back when it stops.
func TestGCFloor(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	if f := startGCFloor(log, func(string) string { return "200" }); f != nil {
		f.Stop()
		t.Fatal("a floor with GOGC set")
	}
	old := debug.SetGCPercent(100)
	defer debug.SetGCPercent(old)
	runtime.GC()
	f := startGCFloor(log, func(string) string { return "" })
	if f == nil {
		t.Fatal("no floor without GOGC")
	}
	if p := f.Percent(); p <= 100 {
		t.Errorf("GOGC %d with a small live heap; want it raised", p)
	}
	f.Stop()
	if p := debug.SetGCPercent(100); p != 100 {
		t.Errorf("GOGC %d after the edge stopped; want 100", p)
	}
}
