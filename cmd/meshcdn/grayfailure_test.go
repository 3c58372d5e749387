package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestFrozenOwner is a gray failure: one of three edge processes is
// stopped with SIGSTOP (still a member to gossip until its probes time out,
// and its peer port accepts connections but never answers) while a steady
// load of new objects goes to the two others. No client request fails, and
// none waits anywhere near the 5 s peer head timeout: a fetch the frozen
// owner does not accept within the adaptive bound goes to the origin, and
// after two such the owner is skipped until it answers again. The others'
// purge logs stay in step: a sync round asks another member when one does
// not answer.
func TestFrozenOwner(t *testing.T) {
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=600")
		_, _ = io.WriteString(w, "body of "+r.URL.Path)
	}))
	defer origin.Close()
	e1 := startEdgeProc(t, "--name", "e1", "--origin", origin.URL)
	e2 := startEdgeProc(t, "--name", "e2", "--origin", origin.URL, "--join", e1.gossip)
	e3 := startEdgeProc(t, "--name", "e3", "--origin", origin.URL, "--join", e1.gossip)
	members := func(e *edgeProc, n float64) func() bool {
		return func() bool { return e.metricValue(t, "meshcdn_ring_members") == n }
	}
	for _, e := range []*edgeProc{e1, e2, e3} {
		waitFor(t, 20*time.Second, "a ring of 3", members(e, 3))
	}
	var sent, failed atomic.Int64
	var mu sync.Mutex
	var worst time.Duration
	var worstPath string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 10 * time.Second}
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				e := []*edgeProc{e1, e2}[i%2]
				p := fmt.Sprintf("/gray/%d-%d.js", w, i) // always new: every request asks the key's owner
				start := time.Now()
				resp, err := client.Get(e.http + p)
				var body []byte
				cs := ""
				if err == nil {
					cs = resp.Header.Get("Cache-Status")
					body, err = io.ReadAll(resp.Body)
					resp.Body.Close()
				}
				d := time.Since(start)
				sent.Add(1)
				if err != nil || resp.StatusCode != 200 || string(body) != "body of "+p {
					failed.Add(1)
				}
				mu.Lock()
				if d > worst {
					worst, worstPath = d, e.http+p+" "+cs
				}
				mu.Unlock()
			}
		})
	}
	time.Sleep(time.Second) // a second of load before the failure, as a baseline
	mu.Lock()
	before := worst
	worst = 0
	mu.Unlock()
	if err := e3.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// Through the time gossip takes to declare the frozen member dead (about
	// 5 s with LAN timings) and beyond.
	waitFor(t, 30*time.Second, "gossip to declare the frozen edge dead", members(e1, 2))
	atStop := sent.Load()
	deadline := time.Now().Add(10 * time.Second)
	for sent.Load() < atStop+200 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	t.Logf("%d requests, %d failed; slowest %v before the SIGSTOP, %v after (%s)", sent.Load(), failed.Load(),
		before.Round(time.Millisecond), worst.Round(time.Millisecond), worstPath)
	if failed.Load() != 0 {
		t.Errorf("%d requests failed", failed.Load())
	}
	for _, e := range []*edgeProc{e1, e2} {
		if strings.Contains(e.logs(), "purge log out of step") {
			t.Errorf("a frozen member put a node's purge log out of step:\n%s", e.logs())
		}
	}
	if worst >= 2*time.Second {
		t.Errorf("a client waited %v with a frozen owner; want well under 2 s", worst)
		if key := strings.Fields(worstPath); len(key) > 0 {
			k := key[0][strings.Index(key[0], "/gray/"):]
			for _, e := range []*edgeProc{e1, e2} {
				for l := range strings.Lines(e.logs()) {
					if strings.Contains(l, k) {
						t.Logf("%s: %s", e.http, l)
					}
				}
			}
		}
	}
}
