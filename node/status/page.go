package status

import (
	"context"
	"time"
)

// Page is everything the status page shows; GET /status.json answers it.
type Page struct {
	Node    string    `json:"node"`
	Region  string    `json:"region,omitempty"`
	Version string    `json:"version"`
	Time    time.Time `json:"time"`
	Started time.Time `json:"started"`
	// Members lists every member this node knows: the live ones, then
	// those that failed recently.
	Members []Member `json:"members"`
	// Requests counts client requests since the node started, all sites.
	Requests int64 `json:"requests"`
	// HitRatio is the share of those requests served from the cache (hit,
	// or stale by policy); ByteHitRatio the share of body bytes. Both are
	// null before the first request.
	HitRatio     *float64 `json:"hit_ratio"`
	ByteHitRatio *float64 `json:"byte_hit_ratio"`
	// Recent is the traffic over the last minute (or since the node
	// started, if sooner).
	Recent       Rates         `json:"recent"`
	Sites        []SiteStatus  `json:"sites"`
	Series       Series        `json:"series"`
	Origins      []Origin      `json:"origins"`
	Budgets      []Budget      `json:"origin_budgets,omitempty"`
	Protocols    []Protocol    `json:"protocols"`
	Shield       *Shield       `json:"shield,omitempty"`
	Purges       []Purge       `json:"purges"`
	Certificates []Certificate `json:"certificates"`
}

// Rates are traffic figures over a window.
type Rates struct {
	WindowSeconds           float64  `json:"window_seconds"`
	RequestsPerSecond       float64  `json:"requests_per_second"`
	BytesPerSecond          float64  `json:"bytes_per_second"`
	OriginRequestsPerSecond float64  `json:"origin_requests_per_second"`
	PeerFetchesPerSecond    float64  `json:"peer_fetches_per_second"`
	SlicedPerSecond         float64  `json:"sliced_responses_per_second"`
	SliceFillsPerSecond     float64  `json:"slice_fills_per_second"`
	HitRatio                *float64 `json:"hit_ratio"`
	ByteHitRatio            *float64 `json:"byte_hit_ratio"`
}

// SiteStatus is one site's traffic.
type SiteStatus struct {
	Name         string   `json:"name"`
	Requests     int64    `json:"requests"`
	HitRatio     *float64 `json:"hit_ratio"`
	ByteHitRatio *float64 `json:"byte_hit_ratio"`
	Recent       Rates    `json:"recent"`
}

// Series is the sampled history, oldest first: Times[i] ends the interval
// whose figures are at index i of every list.
type Series struct {
	IntervalSeconds float64                 `json:"interval_seconds"`
	Times           []time.Time             `json:"times"`
	Total           SeriesValues            `json:"total"`
	Sites           map[string]SeriesValues `json:"sites"`
}

// SeriesValues are figures per interval; a ratio is null for an interval
// without requests.
type SeriesValues struct {
	RequestsPerSecond       []float64  `json:"requests_per_second"`
	HitRatio                []*float64 `json:"hit_ratio"`
	ByteHitRatio            []*float64 `json:"byte_hit_ratio"`
	OriginRequestsPerSecond []float64  `json:"origin_requests_per_second"`
	PeerFetchesPerSecond    []float64  `json:"peer_fetches_per_second"`
}

// recentWindow is how far back Page.Recent looks.
const recentWindow = time.Minute

func ratio(part, whole int64) *float64 {
	if whole <= 0 {
		return nil
	}
	r := float64(part) / float64(whole)
	return &r
}

func rates(d SiteCounters, secs float64) Rates {
	r := Rates{WindowSeconds: secs, HitRatio: ratio(d.Hits, d.Requests), ByteHitRatio: ratio(d.HitBytes, d.Bytes)}
	if secs > 0 {
		r.RequestsPerSecond = float64(d.Requests) / secs
		r.BytesPerSecond = float64(d.Bytes) / secs
		r.OriginRequestsPerSecond = float64(d.OriginRequests) / secs
		r.PeerFetchesPerSecond = float64(d.PeerFetches) / secs
		r.SlicedPerSecond = float64(d.Sliced) / secs
		r.SliceFillsPerSecond = float64(d.SliceFills) / secs
	}
	return r
}

func total(s sample) SiteCounters {
	var t SiteCounters
	for _, c := range s.sites {
		t = t.add(c)
	}
	return t
}

func (v *SeriesValues) append(d SiteCounters, secs float64) {
	r := rates(d, secs)
	v.RequestsPerSecond = append(v.RequestsPerSecond, r.RequestsPerSecond)
	v.HitRatio = append(v.HitRatio, r.HitRatio)
	v.ByteHitRatio = append(v.ByteHitRatio, r.ByteHitRatio)
	v.OriginRequestsPerSecond = append(v.OriginRequestsPerSecond, r.OriginRequestsPerSecond)
	v.PeerFetchesPerSecond = append(v.PeerFetchesPerSecond, r.PeerFetchesPerSecond)
}

// Page builds the page at now.
func (r *Recorder) Page(ctx context.Context, now time.Time) Page {
	ss := r.history(now)
	cl := r.src.Cluster(ctx)
	p := Page{Node: cl.Node, Region: cl.Region, Version: cl.Version, Time: now.UTC(), Started: r.started.UTC(),
		Members: cl.Members, Origins: cl.Origins, Budgets: cl.Budgets, Protocols: cl.Protocols, Shield: cl.Shield, Purges: cl.Purges, Certificates: cl.Certificates,
		Series: Series{IntervalSeconds: r.interval.Seconds(), Sites: map[string]SeriesValues{}}}
	last := ss[len(ss)-1]
	all := total(last)
	p.Requests, p.HitRatio, p.ByteHitRatio = all.Requests, ratio(all.Hits, all.Requests), ratio(all.HitBytes, all.Bytes)

	// The recent window starts at the newest sample at least a minute old,
	// or the oldest there is.
	from := ss[0]
	for _, s := range ss {
		if now.Sub(s.at) < recentWindow {
			break
		}
		from = s
	}
	secs := last.at.Sub(from.at).Seconds()
	p.Recent = rates(all.sub(total(from)), secs)
	names := siteNames(ss)
	for _, name := range names {
		c := last.sites[name]
		p.Sites = append(p.Sites, SiteStatus{Name: name, Requests: c.Requests, HitRatio: ratio(c.Hits, c.Requests),
			ByteHitRatio: ratio(c.HitBytes, c.Bytes), Recent: rates(c.sub(from.sites[name]), secs)})
	}
	for i := 1; i < len(ss); i++ {
		secs := ss[i].at.Sub(ss[i-1].at).Seconds()
		p.Series.Times = append(p.Series.Times, ss[i].at.UTC())
		p.Series.Total.append(total(ss[i]).sub(total(ss[i-1])), secs)
		for _, name := range names {
			v := p.Series.Sites[name]
			v.append(ss[i].sites[name].sub(ss[i-1].sites[name]), secs)
			p.Series.Sites[name] = v
		}
	}
	return p
}
