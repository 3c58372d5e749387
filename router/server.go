package router

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/meshcdn/meshcdn/internal/statuspage"
)

// Source is the mesh as the router sees it: the edges gossip knows, with
// what they advertise, and the owners of keys in each region's ring.
type Source interface {
	// Edges lists the edges gossip knows, healthy or not.
	Edges() []Edge
	// Owner returns the edge of region that owns key.
	Owner(region, key string) (string, bool)
}

// Config configures a router. Zero fields take their defaults.
type Config struct {
	// DNSAddr serves DNS over UDP and TCP; HTTPAddr the redirects;
	// MetricsAddr /metrics, /healthz and /readyz. Empty: off. One of DNSAddr
	// and HTTPAddr is required.
	DNSAddr, HTTPAddr, MetricsAddr string
	// Domains are the names the router answers for: DNS refuses any other
	// name; HTTP redirects requests for these hosts only (any host when
	// empty). Required with DNSAddr.
	Domains []string
	// Zones is the coverage-zone file. Required. It is read again when it
	// changes.
	Zones string
	// GeoIP is a MaxMind database (optional) placing clients outside every
	// zone.
	GeoIP string
	// DefaultRegion serves clients neither the zones nor the database place.
	// Empty: the first region, by name, that has a healthy edge.
	DefaultRegion string
	// TrustProxy lists the networks whose X-Forwarded-For is believed: a
	// request from one of them is placed by the header's first address.
	TrustProxy []netip.Prefix
	// Answers is how many edges a DNS answer names. Default 2.
	Answers int
	// TTL is the DNS answers' time to live. Default 30s.
	TTL time.Duration
	// MaxLoad is the requests in flight an edge advertises beyond which it
	// gets no more users. Default 1000; negative: no limit.
	MaxLoad int
	// ZonesCheck is how often the zone file is looked at. Default 10s.
	ZonesCheck time.Duration
	// Probe is how often the router connects to each edge's HTTP address:
	// an edge that refuses or times out twice in a row gets no users until
	// it accepts again, well before gossip declares a crashed edge dead
	// (several seconds). Default 1s; negative: no probes.
	Probe time.Duration
	// Key is the cache key of a request, for content affinity: a redirect
	// goes to the owner of the key in the client's region when it is
	// healthy. Nil: host, path and query as they come.
	Key func(host, escapedPath, rawQuery string) string
	// Logger receives the router's logs; a decision per answer at Debug.
	Logger *slog.Logger
	// Name is the router's name, on its status page.
	Name string
	// StatusAccess says who may read the status page (/status,
	// /status.json) on the metrics listener.
	StatusAccess statuspage.Access
}

// DefaultMaxLoad is Config.MaxLoad's default.
const DefaultMaxLoad = 1000

// WithDefaults returns c with its zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.Answers == 0 {
		c.Answers = 2
	}
	if c.TTL == 0 {
		c.TTL = 30 * time.Second
	}
	if c.MaxLoad == 0 {
		c.MaxLoad = DefaultMaxLoad
	}
	if c.ZonesCheck == 0 {
		c.ZonesCheck = 10 * time.Second
	}
	if c.Probe == 0 {
		c.Probe = time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate checks c; errors name the field.
func (c Config) Validate() error {
	var errs []error
	if c.DNSAddr == "" && c.HTTPAddr == "" {
		errs = append(errs, errors.New("dns, http: the router needs a DNS or an HTTP listener"))
	}
	if c.DNSAddr != "" && len(c.Domains) == 0 {
		errs = append(errs, errors.New("domain: a DNS listener needs at least one domain to answer for"))
	}
	for _, d := range c.Domains {
		if _, ok := dns.IsDomainName(d); !ok || strings.Trim(d, ".") == "" || strings.ContainsAny(d, " */:") {
			errs = append(errs, fmt.Errorf("domain: %q is not a domain name", d))
		}
	}
	if c.Zones == "" {
		errs = append(errs, errors.New("zones: a coverage-zone file is required"))
	}
	if c.Answers < 0 || c.Answers > 16 {
		errs = append(errs, fmt.Errorf("answers: %d is not between 1 and 16", c.Answers))
	}
	if c.TTL < 0 || c.TTL > 24*time.Hour {
		errs = append(errs, fmt.Errorf("ttl: %v is not between 1s and 24h", c.TTL))
	}
	for _, a := range []struct{ field, addr string }{{"dns", c.DNSAddr}, {"http", c.HTTPAddr}, {"metrics", c.MetricsAddr}} {
		if a.addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			errs = append(errs, fmt.Errorf("%s: %q is not host:port", a.field, a.addr))
		}
	}
	return errors.Join(errs...)
}

// Server is a running router. Create it with New, Start it, Close it.
type Server struct {
	cfg     Config
	src     Source
	log     *slog.Logger
	loc     atomic.Pointer[Locator]
	geo     *GeoIP
	domains []string // lower case, fully qualified
	reg     *prometheus.Registry
	metrics metrics

	dnsUDP, dnsTCP *dns.Server
	httpSrv        *http.Server
	metricsSrv     *http.Server
	httpLn, metLn  net.Listener
	dnsPC          net.PacketConn
	dnsLn          net.Listener

	zonesSum []byte // the zone file's content in force
	probeMu  sync.Mutex
	failures map[string]int // HTTP address → connects failed in a row
	decided  decisions
	started  time.Time
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

type metrics struct {
	answers      *prometheus.CounterVec
	noEdge       *prometheus.CounterVec
	zonesReloads *prometheus.CounterVec
}

// New reads the zone file and the GeoIP database and returns a router over
// src. It opens no socket.
func New(cfg Config, src Source) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.WithDefaults()
	s := &Server{cfg: cfg, src: src, log: cfg.Logger, reg: prometheus.NewRegistry(), failures: map[string]int{}, started: time.Now()}
	b, err := os.ReadFile(cfg.Zones)
	if err != nil {
		return nil, fmt.Errorf("zones: %w", err)
	}
	z, err := ParseZones(b)
	if err != nil {
		return nil, fmt.Errorf("zones: %s: %w", cfg.Zones, err)
	}
	if cfg.DefaultRegion != "" {
		if _, ok := z.Region(cfg.DefaultRegion); !ok {
			return nil, fmt.Errorf("default region: %q is not a region of %s", cfg.DefaultRegion, cfg.Zones)
		}
	}
	if cfg.GeoIP != "" {
		if s.geo, err = OpenGeoIP(cfg.GeoIP); err != nil {
			return nil, err
		}
	}
	s.zonesSum = b
	s.loc.Store(NewLocator(z, s.geo, cfg.DefaultRegion))
	for _, d := range cfg.Domains {
		s.domains = append(s.domains, dns.Fqdn(strings.ToLower(d)))
	}
	s.registerMetrics()
	return s, nil
}

func (s *Server) registerMetrics() {
	s.metrics = metrics{
		answers: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshcdn_router_answers_total",
			Help: "Answers that named edges, by method (dns, http), the region served from and how the client was located (zone, geoip, default)."},
			[]string{"method", "region", "located"}),
		noEdge: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshcdn_router_no_edge_total",
			Help: "Questions answered without an edge, because no edge was healthy, by method."}, []string{"method"}),
		zonesReloads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshcdn_router_zone_reloads_total",
			Help: "Reloads of the coverage-zone file after it changed, by result (ok, failed: the zones in use stay)."}, []string{"result"}),
	}
	s.reg.MustRegister(s.metrics.answers, s.metrics.noEdge, s.metrics.zonesReloads,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshcdn_router_edges", Help: "Edges gossip knows."},
			func() float64 { return float64(len(s.src.Edges())) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshcdn_router_healthy_edges", Help: "Edges users are sent to."},
			func() float64 { return float64(len(s.healthy())) }),
	)
}

// Registry holds the router's metrics, for a caller adding its own.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// Locator is the locator in force.
func (s *Server) Locator() *Locator { return s.loc.Load() }

// healthy lists the edges users may be sent to.
func (s *Server) healthy() []Edge {
	var out []Edge
	s.probeMu.Lock()
	defer s.probeMu.Unlock()
	for _, e := range s.src.Edges() {
		if e.Healthy(s.cfg.MaxLoad) && s.failures[e.HTTPAddr] < probeFailures {
			out = append(out, e)
		}
	}
	return out
}

// probeFailures is how many connects in a row an edge fails before it gets
// no users.
const probeFailures = 2

// probe connects to every edge's HTTP address each cfg.Probe, at most one
// connect per edge at a time, and records which fail.
func (s *Server) probe() {
	t := time.NewTicker(s.cfg.Probe)
	defer t.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	running := map[string]bool{} // this goroutine's own: probes in progress
	done := make(chan string, 64)
	for {
		select {
		case <-s.ctx.Done():
			return
		case addr := <-done:
			delete(running, addr)
			continue
		case <-t.C:
		}
		known := map[string]bool{}
		for _, e := range s.src.Edges() {
			known[e.HTTPAddr] = true
			if e.HTTPAddr == "" || running[e.HTTPAddr] {
				continue
			}
			running[e.HTTPAddr] = true
			wg.Go(func() {
				d := net.Dialer{Timeout: min(s.cfg.Probe, 2*time.Second)}
				c, err := d.DialContext(s.ctx, "tcp", e.HTTPAddr)
				if err == nil {
					_ = c.Close()
				}
				s.probeMu.Lock()
				was := s.failures[e.HTTPAddr]
				if err == nil {
					delete(s.failures, e.HTTPAddr)
				} else if s.ctx.Err() == nil {
					s.failures[e.HTTPAddr] = was + 1
				}
				s.probeMu.Unlock()
				switch {
				case err != nil && was+1 == probeFailures && s.ctx.Err() == nil:
					s.log.Warn("edge does not accept connections: it gets no users until it does", "edge", e.Name, "addr", e.HTTPAddr, "err", err)
				case err == nil && was >= probeFailures:
					s.log.Info("edge accepts connections again", "edge", e.Name, "addr", e.HTTPAddr)
				}
				select {
				case done <- e.HTTPAddr:
				case <-s.ctx.Done():
				}
			})
		}
		s.probeMu.Lock()
		for addr := range s.failures {
			if !known[addr] {
				delete(s.failures, addr) // gone from gossip
			}
		}
		s.probeMu.Unlock()
	}
}

// Start binds the listeners and serves them until Close.
func (s *Server) Start(ctx context.Context) error {
	s.ctx, s.cancel = context.WithCancel(context.Background())
	var lc net.ListenConfig
	fail := func(err error) error {
		s.closeListeners()
		s.cancel()
		return err
	}
	if s.cfg.DNSAddr != "" {
		pc, err := lc.ListenPacket(ctx, "udp", s.cfg.DNSAddr)
		if err != nil {
			return fail(fmt.Errorf("router: dns listener: %w", err))
		}
		s.dnsPC = pc
		// TCP on the same port as UDP, even when the port was 0.
		ln, err := lc.Listen(ctx, "tcp", pc.LocalAddr().String())
		if err != nil {
			return fail(fmt.Errorf("router: dns listener (tcp): %w", err))
		}
		s.dnsLn = ln
	}
	if s.cfg.HTTPAddr != "" {
		ln, err := lc.Listen(ctx, "tcp", s.cfg.HTTPAddr)
		if err != nil {
			return fail(fmt.Errorf("router: http listener: %w", err))
		}
		s.httpLn = ln
	}
	if s.cfg.MetricsAddr != "" {
		ln, err := lc.Listen(ctx, "tcp", s.cfg.MetricsAddr)
		if err != nil {
			return fail(fmt.Errorf("router: metrics listener: %w", err))
		}
		s.metLn = ln
	}
	if s.dnsPC != nil {
		h := &DNS{Domains: s.domains, Locator: s.Locator, Edges: s.healthy, Answers: s.cfg.Answers,
			TTL: uint32(s.cfg.TTL / time.Second), Log: s.log, Observe: s.observe}
		s.dnsUDP = &dns.Server{PacketConn: s.dnsPC, Handler: h}
		s.dnsTCP = &dns.Server{Listener: s.dnsLn, Handler: h, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second}
		for _, srv := range []*dns.Server{s.dnsUDP, s.dnsTCP} {
			started := make(chan struct{})
			srv.NotifyStartedFunc = func() { close(started) }
			s.wg.Go(func() {
				if err := srv.ActivateAndServe(); err != nil && s.ctx.Err() == nil {
					s.log.Error("dns listener failed", "err", err)
				}
			})
			<-started // Shutdown refuses a server that has not started
		}
	}
	if s.httpLn != nil {
		s.httpSrv = &http.Server{Handler: http.HandlerFunc(s.redirect), ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
		s.serve(s.httpSrv, s.httpLn)
	}
	if s.metLn != nil {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
		mux.HandleFunc("GET /readyz", s.readyz)
		page := s.statusHandler()
		mux.Handle("GET /status", page)
		mux.Handle("GET /status.json", page)
		s.metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		s.serve(s.metricsSrv, s.metLn)
	}
	s.wg.Go(s.watchZones)
	if s.cfg.Probe > 0 {
		s.wg.Go(s.probe)
	}
	s.log.Info("router started", "dns", s.DNSAddr(), "http", s.HTTPAddr(), "metrics", s.MetricsAddr(),
		"domains", s.cfg.Domains, "regions", len(s.Locator().Zones().regions), "geoip", s.cfg.GeoIP != "")
	return nil
}

func (s *Server) serve(srv *http.Server, ln net.Listener) {
	s.wg.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("listener failed", "addr", ln.Addr().String(), "err", err)
		}
	})
}

func (s *Server) closeListeners() {
	if s.dnsPC != nil {
		_ = s.dnsPC.Close()
	}
	for _, ln := range []net.Listener{s.dnsLn, s.httpLn, s.metLn} {
		if ln != nil {
			_ = ln.Close()
		}
	}
}

// Close stops the listeners (requests in progress get until ctx ends) and
// the zone watcher, and returns when all have ended.
func (s *Server) Close(ctx context.Context) error {
	s.cancel()
	var errs []error
	for _, srv := range []*http.Server{s.httpSrv, s.metricsSrv} {
		if srv != nil {
			errs = append(errs, srv.Shutdown(ctx))
		}
	}
	for _, srv := range []*dns.Server{s.dnsUDP, s.dnsTCP} {
		if srv != nil {
			errs = append(errs, srv.ShutdownContext(ctx))
		}
	}
	s.wg.Wait()
	if s.geo != nil {
		errs = append(errs, s.geo.Close())
	}
	return errors.Join(errs...)
}

// DNSAddr is the bound DNS address, UDP and TCP ("" when off).
func (s *Server) DNSAddr() string {
	if s.dnsPC == nil {
		return ""
	}
	return s.dnsPC.LocalAddr().String()
}

// HTTPAddr is the bound redirect listener ("" when off).
func (s *Server) HTTPAddr() string { return addrOf(s.httpLn) }

// MetricsAddr is the bound metrics listener ("" when off).
func (s *Server) MetricsAddr() string { return addrOf(s.metLn) }

func addrOf(ln net.Listener) string {
	if ln == nil {
		return ""
	}
	return ln.Addr().String()
}

// observe counts an answer.
func (s *Server) observe(method, region, how string) {
	s.decided.add(region, time.Now())
	if region == "" {
		s.metrics.noEdge.WithLabelValues(method).Inc()
		return
	}
	s.metrics.answers.WithLabelValues(method, region, how).Inc()
}

// readyz answers 200 once the router knows a healthy edge: before that it
// could only refuse.
func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	if n := len(s.healthy()); n == 0 {
		http.Error(w, fmt.Sprintf("not ready: no healthy edge among the %d gossip knows", len(s.src.Edges())), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ready")
}

// watchZones reloads the zone file when its content changes; a file that
// does not parse keeps the zones in use and is logged once per change.
func (s *Server) watchZones() {
	t := time.NewTicker(s.cfg.ZonesCheck)
	defer t.Stop()
	var failed []byte // the content that failed last
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		b, err := os.ReadFile(s.cfg.Zones)
		if err != nil {
			if failed == nil {
				s.log.Error("coverage-zone file unreadable; the zones in use stay", "file", s.cfg.Zones, "err", err)
				s.metrics.zonesReloads.WithLabelValues("failed").Inc()
				failed = []byte{}
			}
			continue
		}
		if bytes.Equal(b, s.zonesSum) || (failed != nil && bytes.Equal(b, failed)) {
			continue
		}
		z, err := ParseZones(b)
		if err == nil && s.cfg.DefaultRegion != "" {
			if _, ok := z.Region(s.cfg.DefaultRegion); !ok {
				err = fmt.Errorf("the default region %q is not in it", s.cfg.DefaultRegion)
			}
		}
		if err != nil {
			failed = b
			s.log.Error("coverage-zone file changed but does not load; the zones in use stay", "file", s.cfg.Zones, "err", err)
			s.metrics.zonesReloads.WithLabelValues("failed").Inc()
			continue
		}
		failed = nil
		s.zonesSum = b
		s.loc.Store(NewLocator(z, s.geo, s.cfg.DefaultRegion))
		s.metrics.zonesReloads.WithLabelValues("ok").Inc()
		s.log.Info("coverage-zone file reloaded", "file", s.cfg.Zones, "regions", len(z.regions))
	}
}

// RoutedPrefix starts the path of a redirect to an edge: /_host/HOST/PATH
// asks the edge for http://HOST/PATH, since a redirect to an edge's address
// would otherwise lose the site's host name.
const RoutedPrefix = "/_host/"

// redirect answers every request with a 302 to an edge near the client:
// the owner of the request's cache key in the client's region when it is
// healthy, else the least loaded edge there, else of the fallback regions.
func (s *Server) redirect(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	host := strings.ToLower(strings.TrimSuffix(hostOnly(r.Host), "."))
	if len(s.domains) > 0 && !slices.Contains(s.domains, dns.Fqdn(host)) {
		http.Error(w, fmt.Sprintf("meshcdn router: %q is not a domain this router serves", truncate(r.Host, 100)), http.StatusMisdirectedRequest)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		// A redirect would turn a POST into a GET on most clients.
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "meshcdn router: only GET and HEAD are redirected", http.StatusMethodNotAllowed)
		return
	}
	client := s.clientAddr(r)
	loc := s.Locator()
	region, how := loc.Locate(client)
	edges, from := Pick(loc.Zones(), s.healthy(), region, 1<<30)
	if len(edges) == 0 {
		s.observe("http", "", how)
		w.Header().Set("Retry-After", "5")
		http.Error(w, "meshcdn router: no healthy edge", http.StatusServiceUnavailable)
		return
	}
	edge, affinity := edges[0], false
	if host != "" {
		key := host + r.URL.EscapedPath()
		if r.URL.RawQuery != "" {
			key += "?" + r.URL.RawQuery
		}
		if s.cfg.Key != nil {
			key = s.cfg.Key(host, r.URL.EscapedPath(), r.URL.RawQuery)
		}
		if owner, ok := s.src.Owner(from, key); ok {
			if i := slices.IndexFunc(edges, func(e Edge) bool { return e.Name == owner }); i >= 0 {
				edge, affinity = edges[i], true
			}
		}
	}
	target := "http://" + edge.HTTPAddr
	if _, err := netip.ParseAddr(host); err != nil && host != "" {
		target += RoutedPrefix + host
	}
	target += r.URL.EscapedPath()
	if r.URL.RawQuery != "" {
		target += "?" + r.URL.RawQuery
	}
	w.Header().Set("Location", target)
	w.Header().Set("Cache-Control", "private, no-store") // the answer depends on the client and the edges' health
	w.WriteHeader(http.StatusFound)
	s.observe("http", from, how)
	s.log.Debug("route", "method", "http", "client", client, "located", how, "region", region, "served_from", from,
		"edge", edge.Name, "owner", affinity, "latency", time.Since(start))
}

// clientAddr is the address a request is placed by: the connection's, or
// the first X-Forwarded-For hop when the connection comes from a trusted
// proxy.
func (s *Server) clientAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	a := ap.Addr().Unmap()
	if xff := r.Header.Values("X-Forwarded-For"); len(xff) > 0 && slices.ContainsFunc(s.cfg.TrustProxy, func(p netip.Prefix) bool { return p.Contains(a) }) {
		first, _, _ := strings.Cut(xff[0], ",")
		if c, err := netip.ParseAddr(strings.TrimSpace(first)); err == nil {
			return c.Unmap()
		}
	}
	return a
}

// hostOnly strips a port from a Host value.
func hostOnly(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		return host
	}
	return strings.Trim(h, "[]")
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
