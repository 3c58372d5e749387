// Package pipeline is the edge's request path, one for every protocol: it
// finds the request's site, applies its access rules, classifies the
// request, and answers it from the store tiers, through a fill (from the
// key's owner, the shield region or the origin, coalesced and streamed to
// every waiting client) or straight from the origin. It owns the fills and
// the counts of what it served.
//
// The protocol fronts hand it requests as net/http does (an http.Handler);
// the node wires it to the tiers, the origin pools, the purge log and the
// mesh.
package pipeline

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshcdn/meshcdn/node/cache"
	"github.com/meshcdn/meshcdn/node/mesh"
	"github.com/meshcdn/meshcdn/node/origin"
	"github.com/meshcdn/meshcdn/node/purge"
	"github.com/meshcdn/meshcdn/node/site"
	"github.com/meshcdn/meshcdn/node/slice"
)

// Config is what the pipeline is built from. Every field but the hooks
// is required; the node validated the values.
type Config struct {
	Name   string // the node's, as peers know it
	Logger *slog.Logger
	Sites  *site.Set
	// Pool is a site's origin pool for a client that came over HTTPS or
	// not.
	Pool func(st *site.Site, https bool) *origin.Pool
	// Store holds this node's own objects; Copies, when not nil, copies of
	// objects other nodes own.
	Store, Copies *cache.Memory
	Purges        *purge.Service
	Registry      prometheus.Registerer

	FillTimeout, FillIdleTimeout time.Duration // see the node's Config
	HitForPass, BodyTimeout      time.Duration
	MaxObjectSize, DiskBytes     int64
	PurgeAllow                   []netip.Prefix // who may send PURGE
	AccessLog                    bool
	ShieldRegion                 string // the mesh's default; a site may name its own

	// HTTPSAddr, when set, is the bound address of the node's HTTPS
	// listener: sites may redirect cleartext clients there.
	HTTPSAddr func() string
	// Challenge, when set, answers an ACME HTTP-01 token of a site that
	// gets its certificates from ACME.
	Challenge func(ctx context.Context, st *site.Site, token string) (string, bool)
	// Purge purges URLs on every member (the PURGE method).
	Purge func(ctx context.Context, urls []string) (string, []purge.Receipt, error)
}

// Pipeline answers client and peer requests. Build it with New; Close ends
// its fills.
type Pipeline struct {
	cfg       Config
	log       *slog.Logger
	sites     *site.Set
	store     *cache.Memory
	copies    *cache.Memory
	disk      *cache.Disk // nil without a disk tier; set before serving
	mesh      *mesh.Mesh  // nil without a mesh; set before serving
	purges    *purge.Service
	metrics   *metrics
	siteStats map[*site.Site]*siteMetrics
	unknown   *siteMetrics
	counters  counters
	// diskChecked is set once the disk tier's index is complete and the purge
	// log has been applied to it; until then disk objects are revalidated.
	diskChecked atomic.Bool
	inflight    atomic.Int64 // client and peer requests being answered

	// Sliced sites' objects not to slice for a while (see sliceable).
	rangeless  *slice.Memo // sites whose origin answered a slice's Range with a whole object
	mismatched *slice.Memo // objects whose slices differed in version lately
	unsliced   *slice.Memo // objects whose slices differed twice in a row

	flightsMu sync.Mutex
	flights   map[string]*flight

	ctx      context.Context // ends at Close; fills derive from it
	cancel   context.CancelFunc
	wg       sync.WaitGroup // fills
	handlers sync.WaitGroup // requests in progress
}

// New builds the pipeline: its metrics are registered on cfg.Registry.
// It starts nothing.
func New(cfg Config) *Pipeline {
	pl := &Pipeline{cfg: cfg, log: cfg.Logger, sites: cfg.Sites, store: cfg.Store, copies: cfg.Copies,
		purges: cfg.Purges, metrics: newMetrics(cfg.Registry), siteStats: map[*site.Site]*siteMetrics{},
		flights: map[string]*flight{}, rangeless: slice.NewMemo(unslicedFor, memoSize),
		mismatched: slice.NewMemo(mismatchWindow, memoSize), unsliced: slice.NewMemo(unslicedFor, memoSize)}
	pl.unknown = pl.metrics.forSite("-")
	sites := pl.sites.Sites()
	if fb := pl.sites.Default(); fb != nil {
		sites = append(sites, fb)
	}
	for _, s := range sites {
		pl.siteStats[s] = pl.metrics.forSite(s.Name)
	}
	pl.ctx, pl.cancel = context.WithCancel(context.Background())
	return pl
}

// SetDisk gives the pipeline the disk tier, before it serves.
func (pl *Pipeline) SetDisk(d *cache.Disk) { pl.disk = d }

// SetMesh gives the pipeline the mesh (nil for none), before it serves.
func (pl *Pipeline) SetMesh(m *mesh.Mesh) { pl.mesh = m }

// DiskChecked reports whether disk objects are known to have every purge
// applied; MarkDiskChecked says they have.
func (pl *Pipeline) DiskChecked() bool { return pl.diskChecked.Load() }

// MarkDiskChecked records that the disk tier's index is complete and the
// purge log applied to it.
func (pl *Pipeline) MarkDiskChecked() { pl.diskChecked.Store(true) }

// Inflight is the number of requests being answered.
func (pl *Pipeline) Inflight() int64 { return pl.inflight.Load() }

// Close stops every fill, waits for the requests in progress (a request
// waiting on a fill ends with it) and then for the fills.
func (pl *Pipeline) Close() {
	pl.cancel()
	pl.handlers.Wait()
	pl.wg.Wait()
}

// owner returns the peer that owns key and its address, or ok false when
// this node owns it (or there is no mesh).
func (pl *Pipeline) owner(key string) (name, addr string, ok bool) {
	if pl.mesh == nil {
		return "", "", false
	}
	return pl.mesh.Owner(key)
}

// statsOf is a site's metrics; the catch-all's for a site the node does not
// serve.
func (pl *Pipeline) statsOf(st *site.Site) *siteMetrics {
	if s, ok := pl.siteStats[st]; ok {
		return s
	}
	return pl.unknown
}

// Counts are a site's totals (nil for the catch-all of hosts no site
// serves), for the status page.
func (pl *Pipeline) Counts(st *site.Site) *SiteCounts { return &pl.statsOf(st).counts }
