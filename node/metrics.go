package node

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/meshcdn/meshcdn/node/cache"
	"github.com/meshcdn/meshcdn/node/origin"
	"github.com/meshcdn/meshcdn/node/pipeline"
)

// metrics are the node's Prometheus metrics, in a registry of its own so that
// several nodes can live in one process (tests, `meshcdn dev`).
type metrics struct {
	reg *prometheus.Registry

	targetRequests *prometheus.CounterVec
	targetErrors   *prometheus.CounterVec
	targetLatency  *prometheus.HistogramVec
	budgetWait     *prometheus.HistogramVec
}

func newMetrics(store *cache.Memory) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	buckets := pipeline.Buckets
	m.targetRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshcdn_origin_server_requests_total", Help: "Requests sent to each origin server, retries included.",
	}, []string{"site", "origin"})
	m.targetErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshcdn_origin_server_errors_total", Help: "Connection errors and 5xx answers of each origin server.",
	}, []string{"site", "origin"})
	m.targetLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "meshcdn_origin_server_latency_seconds", Help: "Time to response headers from each origin server.", Buckets: buckets,
	}, []string{"site", "origin"})
	m.budgetWait = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "meshcdn_origin_budget_wait_seconds", Help: "Time origin requests waited for a slot of the site's origin budget, by class: client, revalidation, background.", Buckets: buckets,
	}, []string{"site", "class"})
	m.reg.MustRegister(m.targetRequests, m.targetErrors, m.targetLatency, m.budgetWait,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	m.registerTier("memory", store.Stats)
	return m
}

// registerTier exports a store tier's size and evictions.
func (m *metrics) registerTier(tier string, stats func() cache.Stats) {
	l := prometheus.Labels{"tier": tier}
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshcdn_store_bytes", Help: "Bytes held by a store tier.", ConstLabels: l},
			func() float64 { return float64(stats().Bytes) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshcdn_store_capacity_bytes", Help: "Budget of a store tier.", ConstLabels: l},
			func() float64 { return float64(stats().Capacity) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshcdn_store_objects", Help: "Objects (memory: keys) held by a store tier.", ConstLabels: l},
			func() float64 { return float64(stats().Objects) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meshcdn_store_evictions_total", Help: "Objects evicted from a store tier to stay within budget.", ConstLabels: l},
			func() float64 { return float64(stats().Evictions) }),
	)
}

// forOrigins registers the health gauge of each target and returns the
// per-request observer of a site's pool.
func (m *metrics) forOrigins(site string, targets []*origin.Target) func(*origin.Target, time.Duration, int, error) {
	type series struct {
		requests, errors prometheus.Counter
		latency          prometheus.Observer
	}
	byTarget := make(map[*origin.Target]series, len(targets))
	for _, t := range targets {
		byTarget[t] = series{
			requests: m.targetRequests.WithLabelValues(site, t.Name()),
			errors:   m.targetErrors.WithLabelValues(site, t.Name()),
			latency:  m.targetLatency.WithLabelValues(site, t.Name()),
		}
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "meshcdn_origin_up", Help: "1 while an origin server takes traffic, 0 while health checks or failures keep it out.",
			ConstLabels: prometheus.Labels{"site": site, "origin": t.Name()},
		}, func() float64 {
			if t.Up(time.Now()) {
				return 1
			}
			return 0
		}))
	}
	return func(t *origin.Target, d time.Duration, status int, err error) {
		s := byTarget[t]
		s.requests.Inc()
		s.latency.Observe(d.Seconds())
		if err != nil || status >= 500 {
			s.errors.Inc()
		}
	}
}
