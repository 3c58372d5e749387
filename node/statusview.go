package node

import (
	"context"
	"crypto/x509"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshcdn/meshcdn/internal/statuspage"
	"github.com/meshcdn/meshcdn/node/origin"
	"github.com/meshcdn/meshcdn/node/pipeline"
	"github.com/meshcdn/meshcdn/node/purge"
	"github.com/meshcdn/meshcdn/node/status"
)

// originStat is one origin server's totals for the status page.
type originStat struct {
	site     string
	target   *origin.Target
	requests atomic.Int64
	errors   atomic.Int64
	nanos    atomic.Int64 // time to response headers, summed
}

// observeOrigin wraps a pool's metrics observer with the status page's
// totals of its targets.
func (n *Node) observeOrigin(siteName string, targets []*origin.Target, next func(*origin.Target, time.Duration, int, error)) func(*origin.Target, time.Duration, int, error) {
	stats := make(map[*origin.Target]*originStat, len(targets))
	for _, t := range targets {
		s := &originStat{site: siteName, target: t}
		stats[t] = s
		n.originStats = append(n.originStats, s)
	}
	return func(t *origin.Target, d time.Duration, code int, err error) {
		if s := stats[t]; s != nil {
			s.requests.Add(1)
			s.nanos.Add(int64(d))
			if err != nil || code >= 500 {
				s.errors.Add(1)
			}
		}
		next(t, d, code, err)
	}
}

// statusOptions say who may read the status page on the metrics listener
// at addr: anyone on loopback or with StatusPublic; elsewhere the holders of
// the status or the admin token.
func (n *Node) statusOptions(addr string) status.Options {
	a := statuspage.NewAccess(loopback(addr) || n.cfg.StatusPublic,
		"--status-token-file or --admin-token-file; --status-public serves it to anyone", n.cfg.StatusToken, n.cfg.AdminToken)
	a.Warn(n.log, addr, !loopback(addr))
	return a
}

// statusView is the node as its status page sees it.
type statusView struct {
	n *Node

	// Purges issued here whose receipts missed members are asked about
	// again, at most every lateCheck, until every member has applied them.
	mu      sync.Mutex
	checked map[string]time.Time
}

const (
	// recentPurges is how many purges of the log the page lists.
	recentPurges = 10
	lateCheck    = 5 * time.Second
)

func (v *statusView) Counters() status.Counters {
	c := status.Counters{Sites: map[string]status.SiteCounters{}}
	v.n.pl.EachSite(func(name string, m *pipeline.SiteCounts) {
		s := c.Sites[name]
		s.Requests += m.Requests.Load()
		s.Hits += m.Hits.Load()
		s.Bytes += m.Bytes.Load()
		s.HitBytes += m.HitBytes.Load()
		s.OriginRequests += m.Origin.Load()
		s.PeerFetches += m.Peer.Load()
		s.Sliced += m.Sliced.Load()
		s.SliceFills += m.SliceFills.Load()
		c.Sites[name] = s
	})
	return c
}

func (v *statusView) Cluster(ctx context.Context) status.Cluster {
	n := v.n
	cl := status.Cluster{Node: n.cfg.Name, Version: n.cfg.Version}
	if n.mesh != nil {
		cl.Region = n.mesh.Region()
	}
	av := adminView{n}
	for _, m := range av.Members() {
		cl.Members = append(cl.Members, status.Member{Name: m.Name, Role: m.Role, State: m.State, Region: m.Region,
			Version: m.Version, Address: m.HTTPAddr, Share: m.OwnedShare, Load: m.Load, Ready: m.Ready, Self: m.Self})
	}
	slices.SortStableFunc(cl.Members, func(a, b status.Member) int { return strings.Compare(a.Name, b.Name) })
	if n.mesh != nil {
		for _, f := range n.mesh.Failed() {
			at := f.At.UTC()
			cl.Members = append(cl.Members, status.Member{Name: f.Name, Role: "edge", State: "failed", Region: regionOf(n, f.Name), FailedAt: &at})
		}
	}
	now := time.Now()
	for _, s := range n.originStats {
		o := status.Origin{Site: s.site, URL: s.target.URL.String(), Up: s.target.Up(now),
			Requests: s.requests.Load(), Errors: s.errors.Load()}
		if o.Requests > 0 {
			o.LatencyMS = math.Round(float64(s.nanos.Load())/float64(o.Requests)/1e4) / 100
		}
		cl.Origins = append(cl.Origins, o)
	}
	for _, p := range n.pl.ProtocolTotals() {
		cl.Protocols = append(cl.Protocols, status.Protocol{Name: p.Name, TLS: p.TLS, Requests: p.Requests})
	}
	for _, b := range n.budgets {
		if !b.limited() {
			continue
		}
		l := b.Limits()
		sb := status.Budget{Site: b.site, Concurrency: l.Concurrency, Rate: l.Rate, Bandwidth: l.Bandwidth,
			Inflight: b.Inflight(), Waiting: b.Waiting()}
		if n.leases != nil {
			if ls, ok := n.leases.Lease(b.site); ok {
				sb.Lease = &status.Lease{Concurrency: ls.Share.Concurrency, Rate: ls.Share.Rate, Bandwidth: ls.Share.Bandwidth,
					Keeper: ls.Keeper, Valid: !ls.Expires.IsZero()}
			}
		}
		cl.Budgets = append(cl.Budgets, sb)
	}
	if n.mesh != nil {
		if shield := n.cfg.Mesh.ShieldRegion; shield != "" {
			sh := &status.Shield{Region: shield, Self: shield == n.mesh.Region()}
			for _, m := range cl.Members {
				if m.Region == shield && m.Role == "edge" && m.State == "alive" && m.Ready {
					sh.Members++
				}
			}
			sh.Reachable = sh.Members > 0
			cl.Shield = sh
		}
	}
	cl.Purges = v.purges(ctx)
	cl.Certificates = v.certificates(now)
	return cl
}

// regionOf is the region a member was last seen in, if the mesh still knows.
func regionOf(n *Node, name string) string {
	r, _ := n.mesh.RegionOf(name)
	return r
}

// purges lists the newest purges of the log, with the receipts of those
// issued here.
func (v *statusView) purges(ctx context.Context) []status.Purge {
	n := v.n
	recs := n.purges.Recent(recentPurges)
	out := make([]status.Purge, 0, len(recs))
	for _, r := range recs {
		p := status.Purge{ID: r.ID, Issued: r.Issued.UTC(), From: r.From, What: r.What, Soft: r.Soft}
		for _, rc := range r.Receipts {
			p.Receipts = append(p.Receipts, status.Receipt{Member: rc.Node, Applied: rc.Applied || rc.Late, Late: rc.Late, Error: rc.Error})
		}
		if slices.ContainsFunc(r.Receipts, func(rc purge.Receipt) bool { return !rc.Applied && !rc.Late }) && v.due(r.ID) {
			// Ask the members that missed it whether they have it now.
			ctx, cancel := context.WithTimeout(ctx, time.Second)
			n.purges.CheckLate(ctx, r.ID)
			cancel()
		}
		out = append(out, p)
	}
	return out
}

// due reports whether purge id may be asked about again, and notes that it
// is.
func (v *statusView) due(id string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.checked == nil {
		v.checked = map[string]time.Time{}
	}
	if t, ok := v.checked[id]; ok && time.Since(t) < lateCheck {
		return false
	}
	v.checked[id] = time.Now()
	if len(v.checked) > 4*recentPurges {
		for k, t := range v.checked {
			if time.Since(t) > time.Minute {
				delete(v.checked, k)
			}
		}
	}
	return true
}

// certificates lists the HTTPS certificates in use and the mesh certificate.
func (v *statusView) certificates(now time.Time) []status.Certificate {
	n := v.n
	var out []status.Certificate
	days := func(t time.Time) int { return int(math.Floor(t.Sub(now).Hours() / 24)) }
	if n.https != nil {
		for _, c := range n.https.certs.Certs() {
			use := "https"
			if c.Managed() {
				use = "acme"
			}
			out = append(out, status.Certificate{Use: use, Names: c.Names, NotAfter: c.Expiry.UTC(), Days: days(c.Expiry)})
		}
	}
	if n.mesh != nil {
		if c := n.mesh.Certificate(); c != nil {
			out = append(out, status.Certificate{Use: "mesh", Names: certNames(c), NotAfter: c.NotAfter.UTC(), Days: days(c.NotAfter)})
		}
	}
	return out
}

func certNames(c *x509.Certificate) []string {
	if len(c.DNSNames) > 0 {
		return c.DNSNames
	}
	return []string{c.Subject.CommonName}
}
