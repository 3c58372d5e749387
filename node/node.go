// Package node is an edge node: the HTTP front that clients talk to, the cache
// fill path to the origins, and the lifecycle of every listener and goroutine.
package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"

	"github.com/meshcdn/meshcdn/node/budget"
	"github.com/meshcdn/meshcdn/node/cache"
	"github.com/meshcdn/meshcdn/node/connlimit"
	"github.com/meshcdn/meshcdn/node/h1"
	"github.com/meshcdn/meshcdn/node/lease"
	"github.com/meshcdn/meshcdn/node/mesh"
	"github.com/meshcdn/meshcdn/node/origin"
	"github.com/meshcdn/meshcdn/node/pipeline"
	"github.com/meshcdn/meshcdn/node/purge"
	"github.com/meshcdn/meshcdn/node/site"
	"github.com/meshcdn/meshcdn/node/status"
)

// Node is one edge node. Create it with New, then Start it and Shutdown it; or
// Run it. Its methods are safe for concurrent use.
type Node struct {
	cfg   Config
	log   *slog.Logger
	sites *site.Set
	pools map[*site.Site]*origin.Pool
	// budgets are the origin budgets of the sites that have one.
	budgets []siteBudget
	// leases shares the budgets over the mesh; nil without one.
	leases *lease.Service
	// httpsPools ask the origins of origin_protocol: follow sites over https.
	httpsPools map[*site.Site]*origin.Pool
	conns      *connlimit.Limiter // client connections: max_connections, max_connections_per_ip
	// originStats are the origin servers' totals for the status page;
	// filled by New, read-only after.
	originStats []*originStat
	status      *status.Recorder
	store       *cache.Memory
	copies      *cache.Memory // copies of objects other nodes own; nil without a mesh
	disk        *cache.Disk   // nil without a cache dir; set in Start
	mesh        *mesh.Mesh    // nil without a mesh; set in Start
	metrics     *metrics
	https       *httpsFront // nil without an HTTPS listener
	acme        *autoCerts  // nil without ACME sites
	pl          *pipeline.Pipeline

	admin       *grpc.Server // nil without an admin listener
	adminLn     net.Listener
	adminHealth *health.Server
	transport   *origin.Transports

	purges *purge.Service

	ctx    context.Context // ends at Shutdown
	cancel context.CancelFunc
	wg     sync.WaitGroup // server loops and background work

	metricsSrv *http.Server
	// The client listener: HTTP/1.1 on fasthttp, h2c (prior knowledge) on
	// net/http, told apart by their first bytes.
	sniff             *h1.Sniff
	h1                *h1.Server
	h2c               *http.Server
	httpLn, metricsLn net.Listener
	ready             atomic.Bool
	started           atomic.Bool
	stopOnce          sync.Once
}

// New validates cfg and builds a node. It opens no sockets and starts no
// goroutines.
func New(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	n := &Node{
		cfg:        cfg,
		log:        cfg.Logger.With("node", cfg.Name),
		pools:      map[*site.Site]*origin.Pool{},
		httpsPools: map[*site.Site]*origin.Pool{},
		store:      cache.NewMemory(cfg.MemoryBytes - copyBudget(cfg)),
		transport:  origin.NewTransports(cfg.Origin),
	}
	pc := purge.Config{Self: cfg.Name, Store: tiersOf{n}, Logger: n.log}
	if cfg.Mesh != nil {
		pc.Mesh, pc.Peers, pc.Lease = purgeView{n}, purgeView{n}, cfg.Mesh.PurgeLease
	}
	n.purges = purge.New(pc)
	n.metrics = newMetrics(n.store)
	n.conns = n.newConnLimiter()
	if b := copyBudget(cfg); b > 0 {
		n.copies = cache.NewMemory(b)
		n.metrics.registerTier("copies", n.copies.Stats)
	}
	var sites []*site.Site
	for _, sc := range cfg.Sites {
		s, err := sc.Compile()
		if err != nil {
			return nil, err // Validate caught it; kept for safety
		}
		sites = append(sites, s)
	}
	set, err := site.NewSet(sites, cfg.Origins)
	if err != nil {
		return nil, err
	}
	n.sites = set
	if n.https, err = n.newHTTPS(sites); err != nil {
		return nil, err
	}
	if n.https != nil {
		if n.acme, err = n.newAutoCerts(sites); err != nil {
			return nil, err
		}
	}
	n.pl = n.newPipeline()
	if fb := set.Default(); fb != nil {
		sites = append(sites, fb)
	}
	for _, s := range sites {
		b := n.newBudget(s) // shared by the site's two pools
		p, err := n.newPool(s, s.OriginsFor("http"), b)
		if err != nil {
			return nil, fmt.Errorf("site %s: %w", s.Name, err)
		}
		n.pools[s] = p
		if s.OriginProtocol == site.OriginFollow {
			// HTTPS clients' requests go to the origins over https.
			if n.httpsPools[s], err = n.newPool(s, s.OriginsFor("https"), b); err != nil {
				return nil, fmt.Errorf("site %s: %w", s.Name, err)
			}
		}
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	return n, nil
}

// Start binds the listeners (so HTTPAddr and MetricsAddr may use port 0) and
// starts serving.
func (n *Node) Start(ctx context.Context) error {
	if !n.started.CompareAndSwap(false, true) {
		return errors.New("node: already started")
	}
	if err := n.openDisk(); err != nil {
		return err
	}
	ln, err := listen(ctx, n.cfg.HTTPAddr, "http")
	if err != nil {
		return err
	}
	ln = n.conns.Listen(ln)
	n.httpLn = ln
	n.sniff = h1.NewSniff(ln, headerTimeout, n.conns.Bare)
	n.h1 = n.newH1()
	n.h2c = n.newHTTPServer()
	n.h2c.Protocols = new(http.Protocols)
	n.h2c.Protocols.SetUnencryptedHTTP2(true)
	if err := n.bindHTTPS(ctx); err != nil {
		_ = ln.Close()
		return err
	}
	if err := n.startMetrics(ctx); err != nil {
		_ = ln.Close()
		n.https.stop(ctx)
		return err
	}
	n.startBackground()
	if err := n.startMeshAndAdmin(ctx); err != nil {
		n.cancel()
		_ = ln.Close()
		n.https.stop(ctx)
		if n.metricsSrv != nil {
			_ = n.metricsSrv.Close()
			n.status.Close()
		}
		if n.adminLn != nil {
			_ = n.adminLn.Close()
		}
		n.wg.Wait()
		return err
	}
	n.wg.Go(n.sniff.Run)
	n.wg.Go(func() { n.serveH1(n.h1, n.sniff.H1(), "http") })
	n.wg.Go(func() { n.serve(n.h2c, n.sniff.H2(), "http") })
	n.serveHTTPS()
	n.ready.Store(true)
	attrs := []any{"http", ln.Addr().String(), "metrics", n.MetricsAddr()}
	if n.https != nil {
		attrs = append(attrs, "https", n.HTTPSAddr())
	}
	if n.mesh != nil {
		attrs = append(attrs, "peer", n.PeerAddr(), "gossip", n.GossipAddr())
	}
	if n.admin != nil {
		attrs = append(attrs, "admin", n.AdminAddr())
	}
	n.log.Info("edge node started", append(attrs, "sites", len(n.sites.Sites()), "memory", n.cfg.MemoryBytes)...)
	n.warnInsecure()
	return nil
}

// warnInsecure logs each protection an operator turned off while its
// listener is reachable beyond loopback.
func (n *Node) warnInsecure() {
	if m := n.cfg.Mesh; m != nil {
		if risk := MeshRisk(m); risk != "" {
			n.log.Warn("mesh.insecure: "+risk+"; anyone who reaches them can join the cluster, purge it and feed it bodies", "opt-out", "mesh.insecure")
		}
	}
	c := n.cfg
	if c.AdminAddr != "" && c.AdminToken == "" && c.AdminClientCAFile == "" && !loopback(c.AdminAddr) {
		n.log.Warn("admin_insecure: the admin API listens beyond loopback with no token or client certificate; anyone who reaches it can purge and drain", "admin", c.AdminAddr, "opt-out", "admin_insecure")
	}
}

// openDisk opens the disk tier, when there is a cache directory.
func (n *Node) openDisk() error {
	if n.cfg.CacheDir == "" {
		return nil
	}
	d, err := cache.OpenDisk(n.cfg.CacheDir, n.cfg.DiskBytes, n.log.With("tier", "disk"))
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	n.disk = d
	n.pl.SetDisk(d)
	n.metrics.registerTier("disk", d.Stats)
	n.metrics.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshcdn_disk_full",
			Help: "1 while the disk tier's file system has no room: new large objects stream through unstored."},
			func() float64 {
				if d.Full() {
					return 1
				}
				return 0
			}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meshcdn_disk_refused_total",
			Help: "Objects the disk tier refused for lack of room on its file system (large ones streamed through unstored)."},
			func() float64 { return float64(d.Refused()) }))
	n.metrics.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshcdn_disk_ready",
		Help: "1 once the disk tier's index is complete and checked against the purge log; until then disk objects are revalidated."},
		func() float64 {
			if n.pl.DiskChecked() {
				return 1
			}
			return 0
		}))
	return nil
}

// Client connections: a header section must arrive within headerTimeout
// and stay within maxHeaderBytes; a kept-alive connection may wait
// idleTimeout for its next request.
const (
	headerTimeout  = 10 * time.Second
	idleTimeout    = 2 * time.Minute
	maxHeaderBytes = 64 << 10
)

// newHTTPServer is a client-facing server on net/http, for HTTP/2.
func (n *Node) newHTTPServer() *http.Server {
	return &http.Server{
		Handler:           n,
		ReadHeaderTimeout: headerTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ConnState:         n.conns.ConnState,
		ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelDebug),
	}
}

// newH1 is a client-facing server on fasthttp, for HTTP/1.1.
func (n *Node) newH1() *h1.Server { return n.newH1With(n) }

// newH1With is newH1 with another handler in front of the node's.
func (n *Node) newH1With(h http.Handler) *h1.Server {
	return h1.New(h1.Config{Handler: h, Logger: n.log, ConnState: n.conns.ConnState,
		HeaderTimeout: headerTimeout, IdleTimeout: idleTimeout, MaxHeaderBytes: maxHeaderBytes})
}

// serveH1 serves ln with s until s shuts down.
func (n *Node) serveH1(s *h1.Server, ln net.Listener, name string) {
	if err := s.Serve(ln); err != nil {
		n.log.Error("listener failed", "listener", name, "err", err)
	}
}

// startMetrics binds the metrics listener and serves /metrics, /healthz,
// /readyz and the status page on it, unless it is off.
func (n *Node) startMetrics(ctx context.Context) error {
	if n.cfg.MetricsAddr == "off" {
		return nil
	}
	mln, err := listen(ctx, n.cfg.MetricsAddr, "metrics")
	if err != nil {
		return err
	}
	n.metricsLn = mln
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if why := n.notReady(); why != "" {
			http.Error(w, "not ready: "+why, http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	n.status = status.NewRecorder(&statusView{n: n}, n.cfg.StatusInterval, 0)
	page := n.status.Handler(n.statusOptions(mln.Addr().String()))
	mux.Handle("GET /status", page)
	mux.Handle("GET /status.json", page)
	n.status.Start()
	n.metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second,
		ErrorLog: slog.NewLogLogger(n.log.Handler(), slog.LevelDebug)}
	n.wg.Go(func() { n.serve(n.metricsSrv, mln, "metrics") })
	return nil
}

// startBackground starts the disk index load and the origins' health checks.
func (n *Node) startBackground() {
	if n.disk != nil {
		// Misses are served while the index is rebuilt, and what it has
		// indexed so far is revalidated before use.
		n.wg.Go(func() {
			if err := n.disk.Load(n.ctx); err != nil {
				if n.ctx.Err() == nil {
					n.log.Error("disk tier load failed", "err", err)
				}
				return
			}
			n.checkDisk()
		})
	}
	for _, pools := range []map[*site.Site]*origin.Pool{n.pools, n.httpsPools} {
		for _, p := range pools {
			n.wg.Go(func() { p.RunHealth(n.ctx) })
		}
	}
}

// startMeshAndAdmin binds the admin listener first (the mesh advertises its
// address), starts the mesh, then serves the admin API.
func (n *Node) startMeshAndAdmin(ctx context.Context) error {
	var adminCfg *tls.Config
	if n.cfg.AdminAddr != "" {
		var err error
		if adminCfg, err = adminTLS(n.cfg); err != nil {
			return err
		}
		aln, err := listen(ctx, n.cfg.AdminAddr, "admin")
		if err != nil {
			return err
		}
		n.adminLn = aln
	}
	if n.cfg.Mesh != nil {
		if err := n.startMesh(ctx); err != nil {
			return err
		}
		n.wg.Go(n.advertise)
	}
	if n.adminLn != nil {
		n.serveAdmin(adminCfg)
	}
	return nil
}

// checkDisk applies the purge log to the disk tier once its index is
// complete: objects indexed after a purge ran are caught by it now.
func (n *Node) checkDisk() {
	if removed := n.purges.ApplyLogged(); removed > 0 {
		n.log.Info("purges applied to disk objects indexed late", "removed", removed)
	}
	n.pl.MarkDiskChecked()
}

// listen binds the TCP listener that serves what.
func listen(ctx context.Context, addr, what string) (net.Listener, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("node: %s listener: %w", what, err)
	}
	return ln, nil
}

func (n *Node) serve(s *http.Server, ln net.Listener, name string) {
	if err := s.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		n.log.Error("listener failed", "listener", name, "err", err)
	}
}

// notReady says why the node should not get traffic yet, or "" when it
// should: it is starting, draining or stopping; its disk index is not
// complete; or it has not yet been in step with the cluster's purges (a
// restarted node would revalidate everything it holds).
func (n *Node) notReady() string {
	switch {
	case !n.ready.Load():
		return "starting, draining or shutting down"
	case n.disk != nil && !n.pl.DiskChecked():
		return "indexing the disk tier"
	case !n.purges.Ready():
		return "catching up on purges"
	}
	return ""
}

// copyBudget is the memory tier's share for copies of others' objects.
func copyBudget(cfg Config) int64 {
	if cfg.Mesh == nil {
		return 0
	}
	return int64(float64(cfg.MemoryBytes) * cfg.Mesh.WithDefaults().CopyShare)
}

// Name is the node's name.
func (n *Node) Name() string { return n.cfg.Name }

// HTTPAddr is the bound client address; empty before Start.
func (n *Node) HTTPAddr() string {
	if n.httpLn == nil {
		return ""
	}
	return n.httpLn.Addr().String()
}

// MetricsAddr is the bound metrics address; empty before Start or when off.
func (n *Node) MetricsAddr() string {
	if n.metricsLn == nil {
		return ""
	}
	return n.metricsLn.Addr().String()
}

// Shutdown stops accepting requests, lets those in flight finish until ctx
// ends (then cuts them off), stops every fill and returns when all of the
// node's goroutines have ended. With Mesh.DrainOnStop it first drains and
// keeps answering for that long. Calls after the first return nil at once.
func (n *Node) Shutdown(ctx context.Context) error {
	var err error
	n.stopOnce.Do(func() {
		n.drainBeforeStop(ctx)
		n.ready.Store(false)
		var errs []error
		if n.mesh != nil {
			// The others move our keys away before we stop answering.
			if err := n.mesh.Leave(); err != nil {
				n.log.Warn("leaving the mesh", "err", err)
			}
		}
		if n.sniff != nil {
			_ = n.sniff.Close() // then the servers close its listeners
			if err := n.h1.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("node: draining clients: %w", err))
			}
			if err := n.h2c.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("node: draining clients: %w", err))
				_ = n.h2c.Close()
			}
		}
		errs = append(errs, n.https.stop(ctx)...)
		if n.mesh != nil {
			n.leases.Stop()
			errs = append(errs, n.mesh.Stop(ctx))
		}
		n.stopAdmin(ctx)
		n.cancel()
		n.pl.Close() // fills stop; handlers still waiting on them return
		n.purges.Stop()
		if n.metricsSrv != nil {
			_ = n.metricsSrv.Close()
			n.status.Close()
		}
		n.wg.Wait()
		n.store.Close()
		for _, b := range n.budgets {
			b.Close()
		}
		if n.copies != nil {
			n.copies.Close()
		}
		n.transport.CloseIdleConnections()
		err = errors.Join(errs...)
		n.log.Info("edge node stopped")
	})
	return err
}

// Run starts the node, serves until ctx ends, then shuts down within
// Config.ShutdownTimeout.
func (n *Node) Run(ctx context.Context) error {
	if err := n.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), n.cfg.ShutdownTimeout)
	defer cancel()
	return n.Shutdown(sctx)
}

// newPool builds the origin pool of a site, with its metrics, within the
// site's origin budget b (nil for none).
func (n *Node) newPool(s *site.Site, origins []site.Origin, b *budget.Budget) (*origin.Pool, error) {
	cfg := origin.PoolConfig{
		Host:          s.OriginHost,
		MaxFails:      s.MaxFails,
		Backoff:       s.Backoff,
		MaxConcurrent: s.MaxOriginRequests,
		QueueTimeout:  s.QueueTimeout,
		Budget:        b,
	}
	if h := s.Health; h != nil {
		cfg.Health = &origin.HealthCheck{Path: h.Path, Interval: h.Interval, Timeout: h.Timeout, Fails: h.Fails, Passes: h.Passes}
	}
	for _, o := range origins {
		cfg.Targets = append(cfg.Targets, &origin.Target{URL: o.URL, Weight: o.Weight, Priority: o.Priority})
	}
	cfg.Observe = n.observeOrigin(s.Name, cfg.Targets, n.metrics.forOrigins(s.Name, cfg.Targets))
	return origin.NewPool(cfg, n.transport, n.log.With("site", s.Name))
}

// pool is the origin pool of st for a client that used HTTPS or not.
func (n *Node) pool(st *site.Site, https bool) *origin.Pool {
	if p, ok := n.httpsPools[st]; ok && https {
		return p
	}
	return n.pools[st]
}

// Store exposes the memory tier's counters.
func (n *Node) Store() cache.Stats { return n.store.Stats() }

// newPipeline builds the request path over the node's tiers, pools, purge
// log and listeners.
func (n *Node) newPipeline() *pipeline.Pipeline {
	c := n.cfg
	pc := pipeline.Config{Name: c.Name, Logger: n.log, Sites: n.sites, Pool: n.pool, Store: n.store, Copies: n.copies,
		Purges: n.purges, Registry: n.metrics.reg, FillTimeout: c.FillTimeout, FillIdleTimeout: c.FillIdleTimeout,
		HitForPass: c.HitForPass, BodyTimeout: c.BodyTimeout, MaxObjectSize: c.MaxObjectSize, DiskBytes: c.DiskBytes,
		PurgeAllow: c.PurgeAllow, AccessLog: c.AccessLog,
		Purge: func(ctx context.Context, urls []string) (string, []purge.Receipt, error) {
			return n.purge(ctx, urls, nil, nil, false)
		}}
	if c.Mesh != nil {
		pc.ShieldRegion = c.Mesh.ShieldRegion
	}
	if n.https != nil {
		pc.HTTPSAddr = n.HTTPSAddr
	}
	if n.acme != nil {
		pc.Challenge = n.challenge
	}
	return pipeline.New(pc)
}

// ServeHTTP answers a client's request (see package pipeline).
func (n *Node) ServeHTTP(w http.ResponseWriter, r *http.Request) { n.pl.ServeHTTP(w, r) }

// tiersOf is every tier of the node as one store, for purges.
type tiersOf struct{ n *Node }

var _ purge.Store = tiersOf{}

func (t tiersOf) Invalidate(key string) bool { return t.n.pl.Invalidate(key) }

func (t tiersOf) Purge(match cache.Match, soft bool) int { return t.n.pl.Purge(match, soft) }
