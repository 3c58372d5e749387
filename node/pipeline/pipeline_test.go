package pipeline

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshcdn/meshcdn/node/cache"
	"github.com/meshcdn/meshcdn/node/httpcache"
	"github.com/meshcdn/meshcdn/node/origin"
	"github.com/meshcdn/meshcdn/node/purge"
	"github.com/meshcdn/meshcdn/node/site"
)

// tiers forwards the purge log's work to a pipeline built after it.
type tiers struct{ pl *Pipeline }

func (t *tiers) Invalidate(key string) bool             { return t.pl.Invalidate(key) }
func (t *tiers) Purge(match cache.Match, soft bool) int { return t.pl.Purge(match, soft) }

// newPipeline is a pipeline alone, no listener in front of it, for the site
// "site.test" whose origin h answers (a real server on loopback); hits
// counts the origin's requests.
func newPipeline(t *testing.T, h http.HandlerFunc) (pl *Pipeline, hits *atomic.Int64) {
	t.Helper()
	hits = new(atomic.Int64)
	o := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		h(w, r)
	}))
	t.Cleanup(o.Close)
	st, err := site.Config{Hosts: []string{"site.test"}, Origins: []site.OriginConfig{{URL: o.URL}}}.Compile()
	if err != nil {
		t.Fatal(err)
	}
	set, err := site.NewSet([]*site.Site{st}, nil)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(o.URL)
	log := slog.New(slog.DiscardHandler)
	tr := origin.NewTransports(origin.Config{})
	t.Cleanup(tr.CloseIdleConnections)
	pool, err := origin.NewPool(origin.PoolConfig{Targets: []*origin.Target{{URL: u, Weight: 1}}}, tr, log)
	if err != nil {
		t.Fatal(err)
	}
	store := cache.NewMemory(64 << 20)
	t.Cleanup(store.Close)
	fwd := &tiers{}
	pl = New(Config{Name: "n1", Logger: log, Sites: set, Pool: func(*site.Site, bool) *origin.Pool { return pool },
		Store: store, Purges: purge.New(purge.Config{Self: "n1", Store: fwd}), Registry: prometheus.NewRegistry(),
		FillTimeout: time.Minute, FillIdleTimeout: 10 * time.Second, HitForPass: time.Minute, BodyTimeout: 10 * time.Second,
		MaxObjectSize: 1 << 20, Purge: func(context.Context, []string) (string, []purge.Receipt, error) { return "", nil, nil }})
	fwd.pl = pl
	t.Cleanup(pl.Close)
	return pl, hits
}

// TestFillJustAfterAnotherStored: a request that missed the store, then
// starts its fill just after another fill for the key stored its response and
// left the flight table, is answered from the store, not by the origin. (In
// a cluster, three nodes asking one owner at once hit this window about once
// per twenty cold objects.)
func TestFillJustAfterAnotherStored(t *testing.T) {
	pl, hits := newPipeline(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		_, _ = io.WriteString(w, "body")
	})
	first := httptest.NewRecorder()
	pl.ServeHTTP(first, httptest.NewRequest("GET", "http://site.test/late.css", nil)) // stored, and gone from the flight table
	if hits.Load() != 1 || first.Body.String() != "body" {
		t.Fatalf("first request: %d origin requests, %q", hits.Load(), first.Body.String())
	}

	// The second request's lookup missed before the store had the object;
	// it reaches the fill path now.
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "http://site.test/late.css", nil)
	st, _ := pl.sites.Lookup(req.Host)
	x := exchange{w: rec, r: req, site: st, stats: pl.statsOf(st), start: time.Now()}
	pl.serveFill(&x, st.Classify(req.URL.Path), st.CacheKey(req.Host, req.URL.EscapedPath(), ""), nil, nil, httpcache.FwdURIMiss, 0)
	if hits.Load() != 1 {
		t.Errorf("%d origin requests; want the first only", hits.Load())
	}
	if rec.Code != 200 || rec.Body.String() != "body" || !x.status.Collapsed {
		t.Errorf("%d %q, status %s; want the stored body, collapsed", rec.Code, rec.Body.String(), x.status)
	}
}
