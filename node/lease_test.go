package node

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/node/budget"
	"github.com/meshcdn/meshcdn/node/lease"
	"github.com/meshcdn/meshcdn/node/site"
)

// peakOrigin counts the requests it answers at once and the most it has.
type peakOrigin struct {
	*testOrigin
	now, peak, served atomic.Int64
}

// newPeakOrigin answers every path after delay ("/hot.css" at once), with
// a cacheable body naming the path.
func newPeakOrigin(t *testing.T, delay time.Duration) *peakOrigin {
	po := &peakOrigin{}
	po.testOrigin = newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		cur := po.now.Add(1)
		defer po.now.Add(-1)
		for p := po.peak.Load(); cur > p && !po.peak.CompareAndSwap(p, cur); p = po.peak.Load() {
		}
		if r.URL.Path != "/hot.css" {
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
		}
		po.served.Add(1)
		w.Header().Set("Cache-Control", "max-age=600")
		_, _ = w.Write([]byte("body of " + r.URL.Path))
	})
	return po
}

// budgetSite is the site of budgetCluster.
const budgetSite = "app.example"

// budgetCluster starts size nodes whose site budgetSite has budget lim, and
// waits until the leases are settled: every share of the concurrency
// granted (a keeper grants nothing new for a lease time after it took
// over, which the cluster's forming makes it do).
func budgetCluster(t *testing.T, o *testOrigin, size int, lim site.BudgetConfig) []*Node {
	nodes := startCluster(t, nil, size, func(c *Config) {
		c.Sites = []site.Config{{Hosts: []string{budgetSite}, Origins: []site.OriginConfig{{URL: o.URL}}, OriginBudget: &lim}}
	})
	if lim.Concurrency > 0 {
		eventually(t, 3*lease.DefaultValid+5*time.Second, func() bool {
			sum := 0
			for _, n := range nodes {
				sum += shareOf(n).Concurrency
			}
			return sum == lim.Concurrency
		})
	}
	return nodes
}

func shareOf(n *Node) budget.Limits {
	l, _ := n.leases.Lease(budgetSite)
	return l.Share
}

// TestMeshOriginBudget is acceptance 1 and 2 of the mesh-wide origin
// budget: three nodes with origin_budget {concurrency: 4}, 60 cold objects
// that each take the origin 400 ms, asked by 30 clients over the three
// nodes: all 60 are served, and the origin never answers more than 4 at
// once; meanwhile a hit on every node is answered from the cache.
func TestMeshOriginBudget(t *testing.T) {
	o := newPeakOrigin(t, 400*time.Millisecond)
	nodes := budgetCluster(t, o.testOrigin, 3, site.BudgetConfig{Concurrency: 4})
	do(t, nodes[0], "GET", "/hot.css", "Host", budgetSite)
	for _, n := range nodes {
		do(t, n, "GET", "/hot.css", "Host", budgetSite) // a copy at each: hits from now on
	}
	next := make(chan int, 60)
	for i := range 60 {
		next <- i
	}
	close(next)
	var bad atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for c := range 30 {
		n := nodes[c%3]
		wg.Go(func() {
			for i := range next {
				p := fmt.Sprintf("/o/%d.js", i)
				if r := doMaybe(t, n, "GET", p, "Host", budgetSite); r.err != nil || r.StatusCode != 200 || r.body != "body of "+p {
					bad.Add(1)
					t.Logf("%s from %s: %v %v %q", p, n.cfg.Name, r.StatusCode, r.err, r.body)
				}
			}
		})
	}
	// While origin requests wait for the budget, hits are answered.
	eventually(t, 10*time.Second, func() bool {
		w := 0.0
		for _, n := range nodes {
			w += gaugeValue(t, n, "meshcdn_origin_budget_waiting", "site", budgetSite)
		}
		return w > 0
	})
	for _, n := range nodes {
		if r := do(t, n, "GET", "/hot.css", "Host", budgetSite); r.body != "body of /hot.css" || !strings.HasPrefix(r.cacheStatus(), "meshcdn; hit") {
			t.Errorf("a hit at %s while the budget is spent: %q %s", n.cfg.Name, r.body, r.cacheStatus())
		}
	}
	wg.Wait()
	t.Logf("60 objects in %v; the origin answered up to %d at once", time.Since(start).Round(time.Millisecond), o.peak.Load())
	if bad.Load() != 0 || o.served.Load() != 61 {
		t.Errorf("%d requests failed; the origin served %d, want 61", bad.Load(), o.served.Load())
	}
	if p := o.peak.Load(); p > 4 {
		t.Errorf("the origin answered up to %d requests at once; the budget is 4", p)
	}
}
