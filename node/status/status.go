// Package status is an edge's status page: what an operator opens first
// when something is off. It keeps a few minutes of the node's counters,
// sampled every couple of seconds, and serves them with the node's view of
// the cluster as one self-contained HTML page (GET /status: no asset loaded
// from anywhere, readable without JavaScript, refreshed in place with it)
// and as JSON for scripts (GET /status.json).
//
// The package knows nothing of the node: it asks a Source for cumulative
// counters and for the cluster as the node sees it.
package status

import (
	"context"
	"sort"
	"sync"
	"time"
)

// Counters are cumulative totals since the node started.
type Counters struct {
	// Sites holds each site's totals, by site name.
	Sites map[string]SiteCounters
}

// SiteCounters are one site's totals.
type SiteCounters struct {
	Requests       int64 // client requests answered
	Hits           int64 // of which served from the cache (fresh, or stale by policy)
	Bytes          int64 // response body bytes sent to clients
	HitBytes       int64 // of which from the cache
	OriginRequests int64 // requests sent to the site's origins (fills and pass-through)
	PeerFetches    int64 // misses asked of the owner or the shield before the origin
	Sliced         int64 // responses sent as an object's slices (a site with slice_size)
	SliceFills     int64 // fills of one slice, from its owner, the shield or the origin
}

func (c SiteCounters) add(o SiteCounters) SiteCounters {
	return SiteCounters{c.Requests + o.Requests, c.Hits + o.Hits, c.Bytes + o.Bytes, c.HitBytes + o.HitBytes,
		c.OriginRequests + o.OriginRequests, c.PeerFetches + o.PeerFetches, c.Sliced + o.Sliced, c.SliceFills + o.SliceFills}
}

func (c SiteCounters) sub(o SiteCounters) SiteCounters {
	return SiteCounters{c.Requests - o.Requests, c.Hits - o.Hits, c.Bytes - o.Bytes, c.HitBytes - o.HitBytes,
		c.OriginRequests - o.OriginRequests, c.PeerFetches - o.PeerFetches, c.Sliced - o.Sliced, c.SliceFills - o.SliceFills}
}

// Cluster is the node's view of the cluster and of its own operations.
type Cluster struct {
	Node, Region, Version string
	Members               []Member
	Origins               []Origin
	Budgets               []Budget
	Protocols             []Protocol // client requests since the start, by protocol
	Shield                *Shield    // nil without a shield region
	Purges                []Purge
	Certificates          []Certificate
}

// Member is one member as this node sees it.
type Member struct {
	Name    string  `json:"name"`
	Role    string  `json:"role"`  // edge or router
	State   string  `json:"state"` // alive, draining, leaving, untrusted or failed
	Region  string  `json:"region,omitempty"`
	Version string  `json:"version,omitempty"`
	Address string  `json:"address,omitempty"` // where it takes client HTTP
	Share   float64 `json:"share"`             // of its region's keys
	Load    int     `json:"load"`              // client requests in flight
	Ready   bool    `json:"ready"`
	Self    bool    `json:"self"`
	// FailedAt is when a failed member was declared dead.
	FailedAt *time.Time `json:"failed_at,omitempty"`
}

// Origin is one origin server of a site.
type Origin struct {
	Site string `json:"site"`
	URL  string `json:"url"`
	Up   bool   `json:"up"` // takes traffic (health checks and recent failures allow it)
	// LatencyMS is the mean time to response headers over the requests
	// since the node started; 0 before the first.
	LatencyMS float64 `json:"latency_ms"`
	Requests  int64   `json:"requests"`
	Errors    int64   `json:"errors"`
}

// Budget is a site's origin budget on this node and its use now; a limit
// of 0 is none.
type Budget struct {
	Site        string  `json:"site"`
	Concurrency int     `json:"concurrency"`
	Rate        float64 `json:"rate_per_second"`
	Bandwidth   float64 `json:"bandwidth_bytes_per_second"`
	Inflight    int     `json:"inflight"`
	Waiting     int     `json:"waiting"`
	// Lease is this node's share of the budget in a mesh; nil alone.
	Lease *Lease `json:"lease,omitempty"`
}

// Lease is a node's share of a site's origin budget: of each limit the
// budget sets, what the node may use, granted by the budget's keeper.
type Lease struct {
	Concurrency int     `json:"concurrency"`
	Rate        float64 `json:"rate_per_second"`
	Bandwidth   float64 `json:"bandwidth_bytes_per_second"`
	Keeper      string  `json:"keeper"`
	// Valid is false before the first grant, and once a lease ran out.
	Valid bool `json:"valid"`
}

// Protocol counts the client requests of one protocol since the node
// started.
type Protocol struct {
	Name     string `json:"name"` // HTTP/1.1, HTTP/2, HTTP/3
	TLS      bool   `json:"tls"`
	Requests int64  `json:"requests"`
}

// Shield is the region in front of the origins and whether it can be reached.
type Shield struct {
	Region string `json:"region"`
	// Members counts the shield region's members that are alive and ready.
	Members   int  `json:"members"`
	Reachable bool `json:"reachable"`
	Self      bool `json:"self"` // this node is in the shield region
}

// Purge is a recent purge in this node's purge log.
type Purge struct {
	ID     string    `json:"id"`
	Issued time.Time `json:"issued"`
	From   string    `json:"from"` // the member it was issued at
	What   string    `json:"what"` // its URLs, prefixes and tags, shortened
	Soft   bool      `json:"soft"`
	// Receipts are the members' answers, for a purge issued at this node.
	Receipts []Receipt `json:"receipts,omitempty"`
}

// Receipt is one member's answer to a purge.
type Receipt struct {
	Member  string `json:"member"`
	Applied bool   `json:"applied"`
	// Late is set for a member that did not acknowledge the purge when it
	// was issued and has applied it since, from another member's log.
	Late  bool   `json:"late,omitempty"`
	Error string `json:"error,omitempty"`
}

// Certificate is a certificate the node serves or proves itself with.
type Certificate struct {
	Use      string    `json:"use"` // https, acme or mesh
	Names    []string  `json:"names"`
	NotAfter time.Time `json:"not_after"`
	Days     int       `json:"days_left"`
}

// Source is what the page shows: the node's counters and its view of the
// cluster.
type Source interface {
	Counters() Counters
	Cluster(ctx context.Context) Cluster
}

// sample is the counters at one instant.
type sample struct {
	at    time.Time
	sites map[string]SiteCounters
}

// Recorder samples a Source's counters every Interval and keeps Keep of
// them.
type Recorder struct {
	src      Source
	interval time.Duration
	keep     int
	started  time.Time

	mu      sync.Mutex
	samples []sample // oldest first

	cancel context.CancelFunc
	done   chan struct{}
}

// DefaultInterval and DefaultKeep make five minutes of history.
const (
	DefaultInterval = 2 * time.Second
	DefaultKeep     = 150
)

// NewRecorder returns a recorder of src that samples every interval and
// keeps keep samples (zero: the defaults). Start runs it.
func NewRecorder(src Source, interval time.Duration, keep int) *Recorder {
	if interval <= 0 {
		interval = DefaultInterval
	}
	if keep < 2 {
		keep = DefaultKeep
	}
	return &Recorder{src: src, interval: interval, keep: keep, started: time.Now()}
}

// Start takes a first sample and samples until Close.
func (r *Recorder) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan struct{})
	r.record(time.Now())
	go func() {
		defer close(r.done)
		t := time.NewTicker(r.interval)
		defer t.Stop()
		for {
			select {
			case now := <-t.C:
				r.record(now)
			case <-ctx.Done():
				return
			}
		}
	}()
}

// Close stops the sampling and returns when it has stopped.
func (r *Recorder) Close() {
	if r == nil || r.cancel == nil {
		return
	}
	r.cancel()
	<-r.done
}

func (r *Recorder) record(now time.Time) {
	c := r.src.Counters()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.samples = append(r.samples, sample{at: now, sites: c.Sites})
	if len(r.samples) > r.keep {
		r.samples = append(r.samples[:0], r.samples[len(r.samples)-r.keep:]...)
	}
}

// history returns the samples, oldest first, and the counters now as the
// last one (so the page is current between samples).
func (r *Recorder) history(now time.Time) []sample {
	c := r.src.Counters()
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]sample, len(r.samples), len(r.samples)+1)
	copy(out, r.samples)
	if len(out) == 0 || now.Sub(out[len(out)-1].at) > 0 {
		out = append(out, sample{at: now, sites: c.Sites})
	}
	return out
}

// siteNames lists every site any sample knows, sorted.
func siteNames(ss []sample) []string {
	seen := map[string]bool{}
	for _, s := range ss {
		for name := range s.sites {
			seen[name] = true
		}
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
