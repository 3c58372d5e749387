package pipeline

import (
	"net/http"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshcdn/meshcdn/node/httpcache"
)

// metrics are the pipeline's Prometheus metrics.
type metrics struct {
	requests         *prometheus.CounterVec
	bytesServed      *prometheus.CounterVec
	originRequests   *prometheus.CounterVec
	originErrors     *prometheus.CounterVec
	coalesced        prometheus.Counter
	peerFetches      *prometheus.CounterVec
	shieldFetches    *prometheus.CounterVec
	peerServed       prometheus.Counter
	peerBytes        prometheus.Counter
	handoffs         prometheus.Counter
	ttfb             *prometheus.HistogramVec
	duration         *prometheus.HistogramVec
	accessDenied     *prometheus.CounterVec
	rateLimited      *prometheus.CounterVec
	compressed       *prometheus.CounterVec
	compressionSaved *prometheus.CounterVec
	sliceFills       *prometheus.CounterVec
	sliced           *prometheus.CounterVec
	sliceMismatches  *prometheus.CounterVec
	// byProtocol counts client requests by protocol: see protocolOf.
	byProtocol [len(protocols)]prometheus.Counter
}

// protocols are the client protocols counted apart, over cleartext and TLS.
var protocols = [...]struct{ name, tls string }{
	{"HTTP/1.1", "false"}, {"HTTP/1.1", "true"}, {"HTTP/2", "false"}, {"HTTP/2", "true"}, {"HTTP/3", "true"},
}

// protocolOf is r's index in protocols.
func protocolOf(r *http.Request) int {
	switch {
	case r.ProtoMajor == 3:
		return 4
	case r.ProtoMajor == 2 && r.TLS != nil:
		return 3
	case r.ProtoMajor == 2:
		return 2
	case r.TLS != nil:
		return 1
	}
	return 0
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
	sliceFill   prometheus.Counter
	sliced      prometheus.Counter
	mismatch    prometheus.Counter
	// counts are the site's totals as the status page samples them.
	counts SiteCounts
}

// SiteCounts are a site's totals since the node started.
type SiteCounts struct {
	Requests, Hits, Bytes, HitBytes, Origin, Peer atomic.Int64
	// Sliced counts the responses sent as an object's slices, SliceFills
	// the fills of single slices (from a peer or the origin).
	Sliced, SliceFills atomic.Int64
}

// counters are the node's totals by cache status for the admin API
// (Prometheus has the same and more, by site). Origin requests and peer
// fetches are counted by site only (SiteCounts) and summed by the node.
type counters struct {
	requests  [len(httpcache.Labels)]atomic.Int64
	bytes     [len(httpcache.Labels)]atomic.Int64
	protocols [len(protocols)]atomic.Int64
}

// Buckets are the bounds of the request time histograms, in seconds.
var Buckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// newMetrics registers the pipeline's metrics on reg; those of peer
// traffic are registered with the mesh (MeshCollectors).
func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{}
	buckets := Buckets
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
	m.sliceFills = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshcdn_slice_fills_total", Help: "Fills of one slice of an object stored as slices (site slice_size), from the slice's owner, the shield or the origin.",
	}, []string{"site"})
	m.sliced = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshcdn_sliced_responses_total", Help: "Client responses sent as the slices of an object stored as slices.",
	}, []string{"site"})
	m.sliceMismatches = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshcdn_slice_version_mismatches_total", Help: "Responses cut short because a slice was of another version of the object than the first (the object's URL is then purged, or, on a second mismatch within a minute, fetched whole for a while).",
	}, []string{"site"})
	byProtocol := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshcdn_client_requests_by_protocol_total", Help: "Client requests by protocol (HTTP/1.1, HTTP/2, HTTP/3) and whether over TLS.",
	}, []string{"protocol", "tls"})
	for i, p := range protocols {
		m.byProtocol[i] = byProtocol.WithLabelValues(p.name, p.tls)
	}
	reg.MustRegister(m.requests, m.bytesServed, m.originRequests, m.originErrors, m.coalesced, m.ttfb, m.duration,
		m.accessDenied, m.rateLimited, m.compressed, m.compressionSaved, m.sliceFills, m.sliced, m.sliceMismatches, byProtocol)
	return m
}

// MeshCollectors are the metrics of peer traffic, for a node in a mesh to
// register.
func (pl *Pipeline) MeshCollectors() []prometheus.Collector {
	m := pl.metrics
	return []prometheus.Collector{m.peerFetches, m.shieldFetches, m.peerServed, m.peerBytes, m.handoffs}
}

func (m *metrics) forSite(name string) *siteMetrics {
	s := &siteMetrics{
		bytes:       m.bytesServed.WithLabelValues(name),
		originFill:  m.originRequests.WithLabelValues(name, "fill"),
		originPass:  m.originRequests.WithLabelValues(name, "bypass"),
		originError: m.originErrors.WithLabelValues(name),
		sliceFill:   m.sliceFills.WithLabelValues(name),
		sliced:      m.sliced.WithLabelValues(name),
		mismatch:    m.sliceMismatches.WithLabelValues(name),
	}
	for i, l := range httpcache.Labels {
		s.requests[i] = m.requests.WithLabelValues(name, l)
		s.ttfb[i] = m.ttfb.WithLabelValues(l)
		s.duration[i] = m.duration.WithLabelValues(l)
	}
	return s
}

// EachSite calls f with every site's totals, and with those of the hosts
// no site serves ("-") once there are any.
func (pl *Pipeline) EachSite(f func(name string, c *SiteCounts)) {
	for st, m := range pl.siteStats {
		f(st.Name, &m.counts)
	}
	if pl.unknown.counts.Requests.Load() > 0 {
		f("-", &pl.unknown.counts)
	}
}

// ProtocolTotal is the count of client requests of one protocol.
type ProtocolTotal struct {
	Name     string // HTTP/1.1, HTTP/2, HTTP/3
	TLS      bool
	Requests int64
}

// ProtocolTotals counts the client requests since the start by protocol,
// over cleartext and TLS.
func (pl *Pipeline) ProtocolTotals() []ProtocolTotal {
	out := make([]ProtocolTotal, len(protocols))
	for i, p := range protocols {
		out[i] = ProtocolTotal{Name: p.name, TLS: p.tls == "true", Requests: pl.counters.protocols[i].Load()}
	}
	return out
}

// Totals are the node's counts since it started: requests and body bytes
// by cache status label (see httpcache.Labels), and the origin requests
// and peer fetches of every site.
func (pl *Pipeline) Totals() (requests, bytes map[string]int64, origin, peer int64) {
	requests, bytes = map[string]int64{}, map[string]int64{}
	for i, l := range httpcache.Labels {
		requests[l] = pl.counters.requests[i].Load()
		bytes[l] = pl.counters.bytes[i].Load()
	}
	for _, m := range pl.siteStats {
		origin += m.counts.Origin.Load()
		peer += m.counts.Peer.Load()
	}
	return requests, bytes, origin + pl.unknown.counts.Origin.Load(), peer + pl.unknown.counts.Peer.Load()
}
