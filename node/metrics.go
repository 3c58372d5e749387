package node

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/meshcdn/meshcdn/node/cache"
	"github.com/meshcdn/meshcdn/node/httpcache"
	"github.com/meshcdn/meshcdn/node/origin"
)

// metrics are the node's Prometheus metrics, in a registry of its own so that
// several nodes can live in one process (tests, `meshcdn dev`).
type metrics struct {
	reg *prometheus.Registry

	requests         *prometheus.CounterVec
	bytesServed      *prometheus.CounterVec
	originRequests   *prometheus.CounterVec
	originErrors     *prometheus.CounterVec
	coalesced        prometheus.Counter
	targetRequests   *prometheus.CounterVec
	targetErrors     *prometheus.CounterVec
	targetLatency    *prometheus.HistogramVec
	peerFetches      *prometheus.CounterVec
	shieldFetches    *prometheus.CounterVec
	peerServed       prometheus.Counter
	peerBytes        prometheus.Counter
	handoffs         prometheus.Counter
	handedOff        *prometheus.CounterVec
	purgesCaughtUp   prometheus.Counter
	ttfb             *prometheus.HistogramVec
	duration         *prometheus.HistogramVec
	accessDenied     *prometheus.CounterVec
	rateLimited      *prometheus.CounterVec
	compressed       *prometheus.CounterVec
	compressionSaved *prometheus.CounterVec
}

// siteMetrics holds one site's resolved series, so the hot path does no label
// look-ups.
type siteMetrics struct {
	requests    [len(httpcache.Labels)]prometheus.Counter
	ttfb        [len(httpcache.Labels)]prometheus.Observer
	duration    [len(httpcache.Labels)]prometheus.Observer
	bytes       prometheus.Counter
	originFill  prometheus.Counter
	originPass  prometheus.Counter
	originError prometheus.Counter
	// counts are the site's totals as the status page samples them.
	counts siteCounts
}

// siteCounts are a site's totals since the node started.
type siteCounts struct {
	requests, hits, bytes, hitBytes, origin, peer atomic.Int64
}

func newMetrics(store *cache.Memory) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	buckets := []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshcdn_requests_total", Help: "Client requests by site and cache status (hit, miss, stale, revalidated, bypass, pass, method).",
	}, []string{"site", "cache_status"})
	m.bytesServed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshcdn_served_bytes_total", Help: "Response body bytes sent to clients.",
	}, []string{"site"})
	m.originRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshcdn_origin_requests_total", Help: "Requests sent to origins, by kind: fill (for the cache) or bypass.",
	}, []string{"site", "kind"})
	m.originErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshcdn_origin_errors_total", Help: "Origin requests that failed: no connection, no response, or a body cut short.",
	}, []string{"site"})
	m.coalesced = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "meshcdn_coalesced_requests_total", Help: "Requests that joined a fill already in flight instead of asking the origin.",
	})
	m.targetRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshcdn_origin_server_requests_total", Help: "Requests sent to each origin server, retries included.",
	}, []string{"site", "origin"})
	m.targetErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshcdn_origin_server_errors_total", Help: "Connection errors and 5xx answers of each origin server.",
	}, []string{"site", "origin"})
	m.targetLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "meshcdn_origin_server_latency_seconds", Help: "Time to response headers from each origin server.", Buckets: buckets,
	}, []string{"site", "origin"})
	m.shieldFetches = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshcdn_shield_fetches_total", Help: "Fills this node, a key's owner outside the shield region, asked of the key's owner in the shield region, by result: ok, failed or no-member (the origin was asked instead).",
	}, []string{"result"})
	m.peerFetches = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshcdn_peer_fetches_total", Help: "Fetches this node sent to owners, by result: ok, failed, or purged (the peer sent an object older than a purge applied here); the origin was asked after failed and purged ones.",
	}, []string{"result"})
	m.peerServed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "meshcdn_peer_served_total", Help: "Fetches this node answered for other nodes.",
	})
	m.peerBytes = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "meshcdn_peer_received_bytes_total", Help: "Body bytes received from peers.",
	})
	m.handoffs = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "meshcdn_handoffs_total", Help: "Misses after a ring change answered by the key's previous owner instead of the origin.",
	})
	m.handedOff = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshcdn_handed_off_total", Help: "Stored responses a draining node offered to their new owners, by result: taken, or failed.",
	}, []string{"result"})
	m.purgesCaughtUp = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "meshcdn_purges_caught_up_total", Help: "Purges this node missed when they were issued and applied later from another node's purge log.",
	})
	m.ttfb = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "meshcdn_time_to_first_byte_seconds", Help: "Time from request to response header.", Buckets: buckets,
	}, []string{"cache_status"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "meshcdn_request_duration_seconds", Help: "Time from request to the end of the response.", Buckets: buckets,
	}, []string{"cache_status"})
	m.accessDenied = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshcdn_access_denied_total", Help: "Requests refused with 403 by a site's access rules, by reason: auth-missing, auth-expired, auth-mismatch, auth-duplicate, ip-denied, referer-denied, user-agent-denied.",
	}, []string{"site", "reason"})
	m.rateLimited = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshcdn_rate_limited_total", Help: "Requests refused with 429 by a site's rate limit.",
	}, []string{"site"})
	m.compressed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshcdn_compressed_responses_total", Help: "Responses the edge sent encoded (compressed as they went out, or a compressed variant it stored), by site and coding.",
	}, []string{"site", "coding"})
	m.compressionSaved = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshcdn_compression_saved_bytes_total", Help: "Bytes the edge's compression kept off the wire: the representations' lengths less their encodings'.",
	}, []string{"site"})
	m.reg.MustRegister(m.requests, m.bytesServed, m.originRequests, m.originErrors, m.coalesced, m.ttfb, m.duration,
		m.accessDenied, m.rateLimited, m.compressed, m.compressionSaved,
		m.targetRequests, m.targetErrors, m.targetLatency,
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

func (m *metrics) forSite(name string) *siteMetrics {
	s := &siteMetrics{
		bytes:       m.bytesServed.WithLabelValues(name),
		originFill:  m.originRequests.WithLabelValues(name, "fill"),
		originPass:  m.originRequests.WithLabelValues(name, "bypass"),
		originError: m.originErrors.WithLabelValues(name),
	}
	for i, l := range httpcache.Labels {
		s.requests[i] = m.requests.WithLabelValues(name, l)
		s.ttfb[i] = m.ttfb.WithLabelValues(l)
		s.duration[i] = m.duration.WithLabelValues(l)
	}
	return s
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
