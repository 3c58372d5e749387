package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"sync/atomic"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/meshcdn/meshcdn/gossip"
	"github.com/meshcdn/meshcdn/internal/statuspage"
	"github.com/meshcdn/meshcdn/internal/units"
	"github.com/meshcdn/meshcdn/internal/yamlkeys"
	"github.com/meshcdn/meshcdn/node"
	"github.com/meshcdn/meshcdn/node/mesh"
	"github.com/meshcdn/meshcdn/node/site"
	"github.com/meshcdn/meshcdn/node/tlsconf"
	"github.com/meshcdn/meshcdn/router"
)

// routerFile is the router's YAML configuration file.
type routerFile struct {
	Router struct {
		Name          string         `yaml:"name"`
		DNS           string         `yaml:"dns"`
		HTTP          string         `yaml:"http"`
		Metrics       string         `yaml:"metrics"`
		Zones         string         `yaml:"zones"`
		GeoIP         string         `yaml:"geoip"`
		DefaultRegion string         `yaml:"default_region"`
		Domains       []string       `yaml:"domains"`
		TrustProxy    []string       `yaml:"trust_proxy"`
		Answers       int            `yaml:"answers"`
		TTL           units.Duration `yaml:"ttl"`
		MaxLoad       int            `yaml:"max_load"`
		Probe         units.Duration `yaml:"probe"`
		StatusToken   string         `yaml:"status_token_file"`
		StatusPublic  bool           `yaml:"status_public"`
	} `yaml:"router"`
	Mesh struct {
		Peer          string            `yaml:"peer"`
		Gossip        string            `yaml:"gossip"`
		Join          []string          `yaml:"join"`
		GossipKey     string            `yaml:"gossip_key"`
		GossipKeyFile string            `yaml:"gossip_key_file"`
		Insecure      bool              `yaml:"insecure"`
		TLS           tlsconf.MeshFiles `yaml:"tls"`
	} `yaml:"mesh"`
}

// listFlag is a repeatable flag; a value may also hold several, separated
// by commas (as the environment gives them).
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for s := range strings.SplitSeq(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// routerFlags are the flags of `meshcdn router`.
type routerFlags struct {
	config, name, dns, http, metrics string
	zones, geoip, defaultRegion      string
	domains, trustProxy              listFlag
	answers, maxLoad                 int
	ttl, probe                       time.Duration
	logFormat, logLevel              string
	statusToken, statusTokenFile     string
	statusPublic                     bool
	meshFlags
}

func (f *routerFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.config, "config", "", "YAML configuration `file` (router and mesh sections)")
	fs.StringVar(&f.name, "name", "", "member name in gossip (default: host name)")
	fs.StringVar(&f.dns, "dns", "", "DNS listen `address`, UDP and TCP (default :53), or off")
	fs.StringVar(&f.http, "http", "", "HTTP redirect listen `address` (default :80), or off")
	fs.StringVar(&f.metrics, "metrics", "", "metrics and health listen `address` (default :9090), or off")
	fs.StringVar(&f.zones, "zones", "", "coverage-zone `file` (JSON; reloaded when it changes)")
	fs.StringVar(&f.geoip, "geoip", "", "MaxMind database `file` placing clients outside every zone (optional)")
	fs.StringVar(&f.defaultRegion, "default-region", "", "region of clients nothing places (default: the first region by name with a healthy edge)")
	fs.Var(&f.domains, "domain", "a `name` the router answers for, repeatable (DNS refuses others; HTTP redirects only these)")
	fs.Var(&f.trustProxy, "trust-proxy", "a `CIDR` whose X-Forwarded-For is believed, repeatable")
	fs.IntVar(&f.answers, "answers", 0, "edges per DNS answer (default 2)")
	fs.DurationVar(&f.ttl, "ttl", 0, "DNS answers' time to live (default 30s)")
	fs.IntVar(&f.maxLoad, "max-load", 0, fmt.Sprintf("requests in flight beyond which an edge gets no more users (default %d; -1: no limit)", router.DefaultMaxLoad))
	fs.DurationVar(&f.probe, "probe", 0, "how often the router connects to each edge's HTTP address: two failures in a row and it gets no users (default 1s; negative: off)")
	fs.StringVar(&f.statusToken, "status-token", "", "`token` that opens the status page of a metrics listener beyond loopback")
	fs.StringVar(&f.statusTokenFile, "status-token-file", "", "read the status token from this `file`")
	fs.BoolVar(&f.statusPublic, "status-public", false, "serve the status page beyond loopback without a token")
	fs.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug (a line per answer), info, warn or error")
	f.meshFlags.register(fs, "")
}

// routerConfig builds the router and mesh configuration: file, then flags
// over it.
func (f *routerFlags) routerConfig() (router.Config, node.MeshConfig, string, error) {
	var rf routerFile
	if f.config != "" {
		b, err := os.ReadFile(f.config)
		if err != nil {
			return router.Config{}, node.MeshConfig{}, "", err
		}
		var root yaml.Node
		if err := yaml.Unmarshal(b, &root); err != nil {
			return router.Config{}, node.MeshConfig{}, "", fmt.Errorf("%s: %w", f.config, err)
		}
		if errs := yamlkeys.Unknown(&root, reflect.TypeFor[routerFile]()); len(errs) > 0 {
			for i, e := range errs {
				errs[i] = fmt.Errorf("%s: %w", f.config, e)
			}
			return router.Config{}, node.MeshConfig{}, "", errors.Join(errs...)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(&rf); err != nil && !errors.Is(err, io.EOF) {
			return router.Config{}, node.MeshConfig{}, "", fmt.Errorf("%s: %w", f.config, err)
		}
	}
	r, fm := rf.Router, rf.Mesh
	name := r.Name
	override(&name, f.name)
	if name == "" {
		h, err := os.Hostname()
		if err != nil {
			return router.Config{}, node.MeshConfig{}, "", fmt.Errorf("--name: no name given and no host name: %w", err)
		}
		name = h
	}
	cfg := router.Config{DNSAddr: r.DNS, HTTPAddr: r.HTTP, MetricsAddr: r.Metrics, Zones: r.Zones, GeoIP: r.GeoIP,
		DefaultRegion: r.DefaultRegion, Domains: r.Domains, Answers: r.Answers, TTL: time.Duration(r.TTL), MaxLoad: r.MaxLoad,
		Probe: time.Duration(r.Probe), Key: defaultKey}
	for addr, v := range map[*string]string{&cfg.DNSAddr: f.dns, &cfg.HTTPAddr: f.http, &cfg.MetricsAddr: f.metrics,
		&cfg.Zones: f.zones, &cfg.GeoIP: f.geoip, &cfg.DefaultRegion: f.defaultRegion} {
		override(addr, v)
	}
	for addr, deflt := range map[*string]string{&cfg.DNSAddr: ":53", &cfg.HTTPAddr: ":80", &cfg.MetricsAddr: ":9090"} {
		switch *addr {
		case "":
			*addr = deflt
		case "off":
			*addr = ""
		}
	}
	if len(f.domains) > 0 {
		cfg.Domains = f.domains
	}
	proxies := r.TrustProxy
	if len(f.trustProxy) > 0 {
		proxies = f.trustProxy
	}
	var errs []error
	for _, p := range proxies {
		pfx, err := netip.ParsePrefix(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("trust-proxy: %q is not a CIDR", p))
			continue
		}
		cfg.TrustProxy = append(cfg.TrustProxy, pfx.Masked())
	}
	if f.answers != 0 {
		cfg.Answers = f.answers
	}
	if f.ttl != 0 {
		cfg.TTL = f.ttl
	}
	if f.maxLoad != 0 {
		cfg.MaxLoad = f.maxLoad
	}
	if f.probe != 0 {
		cfg.Probe = f.probe
	}
	cfg.Name = name
	if err := f.statusAccess(&cfg, r.StatusToken, r.StatusPublic); err != nil {
		errs = append(errs, err)
	}
	m := node.MeshConfig{PeerAddr: fm.Peer, GossipAddr: fm.Gossip, Join: fm.Join, Insecure: fm.Insecure,
		TLS: fm.TLS}
	switch {
	case fm.GossipKey != "" && fm.GossipKeyFile != "":
		errs = append(errs, errors.New("mesh.gossip_key and mesh.gossip_key_file exclude each other"))
	case fm.GossipKey != "":
		keys, err := gossip.ParseKeys(fm.GossipKey)
		if err != nil {
			errs = append(errs, fmt.Errorf("mesh.gossip_key: %w", err))
		}
		m.GossipKeys = keys
	case fm.GossipKeyFile != "":
		keys, err := gossip.ReadKeyFile(fm.GossipKeyFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("mesh.gossip_key_file: %w", err))
		}
		m.GossipKeys = keys
	}
	if err := f.meshFlags.apply(&m); err != nil {
		errs = append(errs, err)
	}
	if err := m.TLS.Check(); err != nil {
		errs = append(errs, fmt.Errorf("mesh.tls: %w", err))
	}
	if risk := node.MeshRisk(&m); risk != "" && !m.Insecure {
		errs = append(errs, fmt.Errorf("mesh: %s: anyone who reaches them could join the cluster and tell the router where to send users. "+
			"Give a gossip key (--gossip-key or --gossip-key-file) and mesh TLS (--mesh-ca with --mesh-cert and --mesh-key, or with --mesh-ca-key); "+
			"meshcdn ca init makes them. Or listen on 127.0.0.1, or accept the risk with --mesh-insecure (mesh.insecure)", risk))
	}
	if err := cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	err := errors.Join(errs...)
	if err != nil && f.config != "" {
		err = fmt.Errorf("%s: %w", f.config, err)
	}
	return cfg, m, name, err
}

// defaultKey is the cache key of a site with the default key options: the
// router knows no site, and most sites keep them.
var defaultKey = func() func(host, escapedPath, rawQuery string) string {
	s, err := site.Config{Hosts: []string{"router.invalid"}, Origins: []site.OriginConfig{{URL: "http://router.invalid"}}}.Compile()
	if err != nil {
		panic(err) // a fixed configuration
	}
	return s.CacheKey
}()

// meshSource is the mesh as the router sees it, once it has started.
type meshSource struct{ m atomic.Pointer[mesh.Mesh] }

func (s *meshSource) Edges() []router.Edge {
	ms := s.m.Load()
	if ms == nil {
		return nil
	}
	var out []router.Edge
	for _, m := range ms.Members() {
		out = append(out, router.Edge{Name: m.Name, Region: m.Region, HTTPAddr: m.HTTPAddr, Load: m.Load, State: m.State, Ready: m.Ready})
	}
	return out
}

func (s *meshSource) Owner(region, key string) (string, bool) {
	ms := s.m.Load()
	if ms == nil {
		return "", false
	}
	name, _, ok := ms.OwnerIn(region, key)
	return name, ok
}

// statusAccess says who may read the router's status page: anyone on a
// loopback metrics listener or with status_public, else the holders of the
// status token (the file's setting, then the flags').
func (f *routerFlags) statusAccess(cfg *router.Config, tokenFile string, public bool) error {
	var tok string
	if tokenFile != "" && f.statusTokenFile == "" {
		t, err := node.ReadToken(tokenFile)
		if err != nil {
			return fmt.Errorf("router.status_token_file: %w", err)
		}
		tok = t
	}
	if err := tokenFlags(&tok, f.statusToken, f.statusTokenFile, "status-token-file"); err != nil {
		return err
	}
	cfg.StatusAccess = statuspage.NewAccess(node.Loopback(cfg.MetricsAddr) || public || f.statusPublic,
		"--status-token-file; --status-public serves it to anyone", tok)
	return nil
}

func runRouter(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("meshcdn router", flag.ContinueOnError)
	setUsage(fs, stdout, "Usage: meshcdn router --zones FILE --domain NAME [--join SEEDS] [flags]\n\n"+
		"Sends each user to healthy edges of the nearest region: authoritative DNS answers and HTTP 302\n"+
		"redirects. It joins the mesh like an edge and owns nothing. Every flag may also come from the\n"+
		"environment as MESHCDN_<FLAG>; flags win over the environment, which wins over the file.\n")
	var f routerFlags
	f.register(fs)
	if err := parseFlags(fs, args, os.Getenv); err != nil {
		return err
	}
	cfg, mcfg, name, err := f.routerConfig()
	if err != nil {
		return usageError{err: err}
	}
	log, err := newLogger(stderr, f.logFormat, f.logLevel)
	if err != nil {
		return err
	}
	if risk := node.MeshRisk(&mcfg); risk != "" {
		log.Warn("mesh.insecure: "+risk+"; anyone who reaches them can join the cluster and tell the router where to send users", "opt-out", "mesh.insecure")
	}
	cfg.Logger = log
	cfg.StatusAccess.Warn(log, cfg.MetricsAddr, cfg.MetricsAddr != "" && !node.Loopback(cfg.MetricsAddr))
	src := &meshSource{}
	r, err := router.New(cfg, src)
	if err != nil {
		return usageError{err: err}
	}
	if err := r.Start(ctx); err != nil {
		return err
	}
	// The mesh advertises the bound redirect address, known once the router
	// has started.
	m := mesh.New(mcfg, mesh.Self{Name: name, Version: version, Router: true, HTTPAddr: r.HTTPAddr(), Logger: log})
	if err := m.Start(ctx); err != nil {
		_ = r.Close(context.Background())
		return err
	}
	src.m.Store(m)
	fmt.Fprintf(stdout, "router %s: dns %s, http %s, metrics %s, gossip %s\n", name, r.DNSAddr(), r.HTTPAddr(), r.MetricsAddr(), m.GossipAddr())
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errs := []error{r.Close(sctx), m.Leave()}
	return errors.Join(append(errs, m.Stop(sctx))...)
}
