package node

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/node/pipeline"
	"github.com/meshcdn/meshcdn/node/site"
	"github.com/meshcdn/meshcdn/node/status"
)

// TestOriginBudget: a site's origin_budget of 4 on one node: 60 cold
// objects that each take the origin a while, asked by 30 clients at once,
// are all served, and the origin never answers more than 4 at once;
// meanwhile a hit answers at once, while every slot is taken, and the
// status page shows the budget in use.
func TestOriginBudget(t *testing.T) {
	gate := make(chan struct{})
	var inFlight, peak, served atomic.Int64
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		cur := inFlight.Add(1)
		defer inFlight.Add(-1)
		for p := peak.Load(); cur > p && !peak.CompareAndSwap(p, cur); p = peak.Load() {
		}
		if r.URL.Path != "/hot.css" {
			select {
			case <-gate:
			case <-r.Context().Done():
				return
			}
		}
		served.Add(1)
		w.Header().Set("Cache-Control", "max-age=600")
		_, _ = w.Write([]byte("body of " + r.URL.Path))
	})
	n := startNode(t, nil, Config{Sites: []site.Config{{
		Hosts: []string{"app.example"}, Origins: []site.OriginConfig{{URL: o.URL}},
		OriginBudget: &site.BudgetConfig{Concurrency: 4},
	}}})
	do(t, n, "GET", "/hot.css", "Host", "app.example") // stored: hits from now on
	var wg sync.WaitGroup
	var bad atomic.Int64
	next := make(chan int, 60)
	for i := range 60 {
		next <- i
	}
	close(next)
	for range 30 {
		wg.Go(func() {
			for i := range next {
				p := fmt.Sprintf("/o/%d.js", i)
				if r := doMaybe(t, n, "GET", p, "Host", "app.example"); r.err != nil || r.body != "body of "+p {
					bad.Add(1)
				}
			}
		})
	}
	// Every slot is taken and the rest wait their turn: a hit is answered
	// all the same.
	eventually(t, 10*time.Second, func() bool {
		return gaugeValue(t, n, "meshcdn_origin_budget_inflight", "site", "app.example") == 4 &&
			gaugeValue(t, n, "meshcdn_origin_budget_waiting", "site", "app.example") == 26
	})
	if r := do(t, n, "GET", "/hot.css", "Host", "app.example"); r.body != "body of /hot.css" || !strings.HasPrefix(r.cacheStatus(), "meshcdn; hit") {
		t.Errorf("a hit while the budget is spent: %q %s", r.body, r.cacheStatus())
	}
	// The status page shows the budget and its use.
	if b := statusJSON(t, n).Budgets; len(b) != 1 || b[0] != (status.Budget{Site: "app.example", Concurrency: 4, Inflight: 4, Waiting: 26}) {
		t.Errorf("status.json's origin budgets: %+v", b)
	}
	close(gate)
	wg.Wait()
	if bad.Load() != 0 || served.Load() != 61 {
		t.Errorf("%d requests failed; the origin served %d", bad.Load(), served.Load())
	}
	if p := peak.Load(); p != 4 {
		t.Errorf("the origin answered up to %d requests at once, want 4", p)
	}
}

// TestOriginBudgetOrder: with the budget spent, a client's fill goes to the
// origin before a revalidation that was waiting longer, and an operator's
// prefetch after both.
func TestOriginBudgetOrder(t *testing.T) {
	gate := make(chan struct{})
	var mu sync.Mutex
	var order []string
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		order = append(order, r.URL.Path)
		mu.Unlock()
		if r.URL.Path == "/busy.css" {
			<-gate
		}
		w.Header().Set("Cache-Control", "max-age=0")
		w.Header().Set("ETag", `"1"`)
		_, _ = w.Write([]byte("v1"))
	})
	n := startNode(t, nil, Config{Sites: []site.Config{{
		Hosts: []string{"app.example"}, Origins: []site.OriginConfig{{URL: o.URL}},
		OriginBudget: &site.BudgetConfig{Concurrency: 1},
	}}})
	do(t, n, "GET", "/stale.css", "Host", "app.example") // stored, always stale (max-age=0)
	mu.Lock()
	order = nil
	mu.Unlock()
	var wg sync.WaitGroup
	waiting := func(want float64) {
		eventually(t, 5*time.Second, func() bool {
			return gaugeValue(t, n, "meshcdn_origin_budget_waiting", "site", "app.example") == want
		})
	}
	wg.Go(func() { doMaybe(t, n, "GET", "/busy.css", "Host", "app.example") })
	eventually(t, 5*time.Second, func() bool {
		return gaugeValue(t, n, "meshcdn_origin_budget_inflight", "site", "app.example") == 1
	})
	wg.Go(func() { // as meshcdn admin prefetch does
		req, _ := http.NewRequestWithContext(pipeline.WithOperator(t.Context()), http.MethodGet, "http://app.example/prefetched.css", nil)
		req.RequestURI, req.RemoteAddr = "/prefetched.css", "127.0.0.1:0"
		n.ServeHTTP(&discardWriter{h: http.Header{}}, req)
	})
	waiting(1)
	wg.Go(func() { doMaybe(t, n, "GET", "/stale.css", "Host", "app.example") })
	waiting(2)
	wg.Go(func() { doMaybe(t, n, "GET", "/new.css", "Host", "app.example") })
	waiting(3)
	close(gate)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if got := strings.Join(order, " "); got != "/busy.css /new.css /stale.css /prefetched.css" {
		t.Errorf("the origin was asked in the order %s", got)
	}
}

// TestOriginBudgetConfig: the settings are checked; a budget is valid on a
// single node and in a mesh (which shares it by leases).
func TestOriginBudgetConfig(t *testing.T) {
	for _, c := range []struct {
		yaml, want string
	}{
		{"origin_budget: {}", "origin_budget: sets no limit"},
		{"origin_budget: {concurrency: -1}", "origin_budget.concurrency: must not be negative"},
		{"origin_budget: {rate: 200}", "invalid rate \"200\""},
		{"origin_budget: {bandwidth: fast}", "invalid bandwidth \"fast\""},
	} {
		cfg, err := ParseFile("meshcdn.yaml", []byte("sites:\n  - hosts: [a.example]\n    origins: [http://127.0.0.1:1]\n    "+c.yaml+"\n"))
		if err == nil {
			err = cfg.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.yaml, err, c.want)
		}
	}
	cfg := Config{Sites: []site.Config{{Hosts: []string{"a.example"}, Origins: []site.OriginConfig{{URL: "http://127.0.0.1:1"}},
		OriginBudget: &site.BudgetConfig{Concurrency: 4, Rate: 200, Bandwidth: 50e6}}}}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("a budget on a single node: %v", err)
	}
	cfg.Mesh = &MeshConfig{PeerAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0"}
	if err := cfg.Validate(); err != nil {
		t.Errorf("a budget in a mesh: %v", err)
	}
}

// TestOriginBudgetReload: a reload sets, changes and removes a site's
// origin budget in a running node, for the origin requests that start
// afterwards; an invalid configuration changes nothing.
func TestOriginBudgetReload(t *testing.T) {
	o := newPeakOrigin(t, 300*time.Millisecond)
	sc := site.Config{Hosts: []string{"app.example"}, Origins: []site.OriginConfig{{URL: o.URL}}}
	n := startNode(t, nil, Config{Sites: []site.Config{sc}})
	wave := 0
	peakOf := func(clients int) int64 {
		wave++
		o.peak.Store(0)
		var wg sync.WaitGroup
		for i := range clients {
			wg.Go(func() { do(t, n, "GET", fmt.Sprintf("/w%d/%d.js", wave, i), "Host", "app.example") })
		}
		wg.Wait()
		return o.peak.Load()
	}
	reload := func(b *site.BudgetConfig) {
		t.Helper()
		c := sc
		c.OriginBudget = b
		if err := n.ReloadBudgets(Config{Sites: []site.Config{c}}); err != nil {
			t.Fatal(err)
		}
	}
	if p := peakOf(6); p != 6 {
		t.Fatalf("without a budget, the origin answered up to %d of 6 at once", p)
	}
	reload(&site.BudgetConfig{Concurrency: 2})
	if p := peakOf(6); p != 2 {
		t.Errorf("with a budget of 2 reloaded, the origin answered up to %d at once", p)
	}
	if b := statusJSON(t, n).Budgets; len(b) != 1 || b[0].Concurrency != 2 {
		t.Errorf("status.json's origin budgets: %+v", b)
	}
	reload(&site.BudgetConfig{Concurrency: 3})
	if p := peakOf(6); p != 3 {
		t.Errorf("with the budget raised to 3, the origin answered up to %d at once", p)
	}
	bad := sc
	bad.OriginBudget = &site.BudgetConfig{Concurrency: -1}
	if err := n.ReloadBudgets(Config{Sites: []site.Config{bad}}); err == nil || !strings.Contains(err.Error(), "origin_budget.concurrency") {
		t.Errorf("an invalid budget reloaded: %v", err)
	}
	if p := peakOf(6); p != 3 {
		t.Errorf("after an invalid reload, the origin answered up to %d at once; want 3 still", p)
	}
	reload(nil)
	if p := peakOf(6); p != 6 {
		t.Errorf("with the budget removed, the origin answered up to %d of 6 at once", p)
	}
	if b := statusJSON(t, n).Budgets; len(b) != 0 {
		t.Errorf("status.json's origin budgets without one: %+v", b)
	}
}
