package node

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"reflect"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/meshcdn/meshcdn/gossip"
	"github.com/meshcdn/meshcdn/internal/units"
	"github.com/meshcdn/meshcdn/internal/yamlkeys"
	"github.com/meshcdn/meshcdn/node/origin"
	"github.com/meshcdn/meshcdn/node/site"
	"github.com/meshcdn/meshcdn/node/tlsconf"
)

// Defaults of Config's zero fields.
const (
	DefaultHTTPAddr    = ":8080"
	DefaultMetricsAddr = ":9090"
	DefaultMemory      = 256 << 20
	// DefaultMaxConnectionsPerIP is max_connections_per_ip's default.
	DefaultMaxConnectionsPerIP = 256
	// connectionBytes is the memory budget max_connections allows a client
	// connection by default (an idle one holds about 50 KB: buffers, a
	// goroutine, TLS state), and minMaxConnections its least.
	connectionBytes        = 64 << 10
	minMaxConnections      = 1024
	DefaultDisk            = 1 << 30
	DefaultFillTimeout     = 10 * time.Minute
	DefaultFillIdleTimeout = 30 * time.Second
	DefaultHitForPass      = 2 * time.Minute
	DefaultShutdownTimeout = 15 * time.Second
	DefaultBodyTimeout     = 20 * time.Second
)

// Config is one edge node's configuration. The zero value of every field means
// its default; only an origin (Origins or a site) is required.
type Config struct {
	// Name identifies the node in logs and, later, the mesh. Default: host name.
	Name string
	// Version is the software version the node advertises to the others.
	Version string
	// HTTPAddr serves clients, HTTP/1.1 and cleartext HTTP/2. Default ":8080".
	HTTPAddr string
	// MetricsAddr serves /metrics, /healthz and /readyz. Default ":9090"; "off"
	// disables it.
	MetricsAddr string
	// HTTPSAddr, when set, serves clients over TLS 1.2 and 1.3 (HTTP/2 and
	// HTTP/1.1 by ALPN) with the same handler and cache as HTTPAddr.
	HTTPSAddr string
	// HTTP3 serves HTTP/3 over QUIC on the UDP port of HTTPSAddr as well,
	// announced on HTTPS answers with Alt-Svc; it needs HTTPSAddr.
	// HTTP3ZeroRTT takes GET and HEAD requests in 0-RTT early data (others
	// get 425 Too Early); off by default, as early data can be replayed.
	HTTP3, HTTP3ZeroRTT bool
	// HTTP3AdvertisedPort is the UDP port Alt-Svc names when clients reach
	// HTTP/3 on another port than the listener's (a load balancer or a
	// port mapping in front of the edge); 0 names the listener's.
	HTTP3AdvertisedPort int
	// TLSCertFile and TLSKeyFile are the HTTPS listener's default
	// certificate: for a server name no site certificate covers, or none.
	TLSCertFile, TLSKeyFile string
	// ACME, when set, is the certificate authority that sites with acme:
	// true get their certificates from.
	ACME *ACMEConfig

	// Origins is the origin for any Host that no site names. Without it, such
	// requests get 404: the edge is never an open proxy.
	Origins []*url.URL
	// Sites binds CDN domains to their origins and rules.
	Sites []site.Config

	// MemoryBytes is the memory tier's budget. Default 256 MiB.
	MemoryBytes int64
	// MaxObjectSize is the largest body the memory tier stores. Larger ones go
	// to the disk tier when there is one (if they come with a Content-Length),
	// else stream through. Default: an eighth of MemoryBytes.
	MaxObjectSize int64
	// CacheDir, when set, enables the disk tier in that directory: every stored
	// object is written through to it, and it survives restarts.
	CacheDir string
	// DiskBytes is the disk tier's budget. Default 1 GiB.
	DiskBytes int64
	// MaxConnections bounds the client connections open at once, HTTP and
	// HTTPS together; past it the longest-idle one is closed to make room,
	// or, with none idle, the new one at once. Default: one per 64 KiB of
	// MemoryBytes, at least 1024 (4096 for the default budget).
	MaxConnections int
	// MaxConnectionsPerIP bounds the client connections of one address, in
	// the same way. Default 256.
	MaxConnectionsPerIP int
	// FillTimeout bounds a whole fill, and FillIdleTimeout the silence between
	// two reads of its body. Defaults 10m and 30s.
	FillTimeout     time.Duration
	FillIdleTimeout time.Duration
	// HitForPass is how long a key whose response was not storable goes straight
	// to the origin, uncoalesced. Default 2m.
	HitForPass time.Duration
	// BodyTimeout bounds reading a request body sent to the origin: this
	// long, plus a second per reqguard.MinRate bytes that arrive, then 408.
	// Default 20s.
	BodyTimeout time.Duration
	// Origin tunes origin connections.
	Origin origin.Config

	// Mesh, when set, makes the node a member of a mesh of edges.
	Mesh *MeshConfig

	// AdminAddr serves the gRPC AdminService (with health and reflection).
	// Empty: no admin listener (`meshcdn edge` defaults to 127.0.0.1:7071).
	AdminAddr string
	// StatusToken, when set, opens the status page (/status, /status.json)
	// of a metrics listener beyond loopback, as the admin token does too;
	// StatusPublic opens it to anyone. On loopback it is open.
	StatusToken  string
	StatusPublic bool
	// StatusInterval is how often the status page samples the counters
	// (default 2s; it keeps 150 samples).
	StatusInterval time.Duration
	// AdminToken, when set, is required as "authorization: Bearer <token>" on
	// every admin call but health checks.
	AdminToken string
	// AdminInsecure allows an admin listener beyond loopback without a token
	// or client certificates.
	AdminInsecure bool
	// AdminCertFile and AdminKeyFile make the admin listener speak TLS with
	// this certificate. AdminClientCAFile, with them, requires a client
	// certificate signed by that CA on every call: an alternative to the
	// token beyond loopback.
	AdminCertFile, AdminKeyFile, AdminClientCAFile string
	// PurgeAllow lists the client networks allowed to send the HTTP PURGE
	// method (one URL, cluster-wide). Default: loopback only.
	PurgeAllow []netip.Prefix

	// ShutdownTimeout bounds Run's drain of in-flight requests. Default 15s.
	ShutdownTimeout time.Duration
	// AccessLog logs one Info line per request with its cache status.
	AccessLog bool
	// Logger receives structured logs. Nil discards them.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Name == "" {
		c.Name, _ = os.Hostname()
	}
	if c.HTTPAddr == "" {
		c.HTTPAddr = DefaultHTTPAddr
	}
	if c.MetricsAddr == "" {
		c.MetricsAddr = DefaultMetricsAddr
	}
	if c.MemoryBytes == 0 {
		c.MemoryBytes = DefaultMemory
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = max(minMaxConnections, int(c.MemoryBytes/connectionBytes))
	}
	if c.MaxConnectionsPerIP == 0 {
		c.MaxConnectionsPerIP = DefaultMaxConnectionsPerIP
	}
	if c.MaxObjectSize == 0 {
		c.MaxObjectSize = c.MemoryBytes / 8
	}
	if c.CacheDir != "" && c.DiskBytes == 0 {
		c.DiskBytes = DefaultDisk
	}
	if c.FillTimeout == 0 {
		c.FillTimeout = DefaultFillTimeout
	}
	if c.FillIdleTimeout == 0 {
		c.FillIdleTimeout = DefaultFillIdleTimeout
	}
	if c.HitForPass == 0 {
		c.HitForPass = DefaultHitForPass
	}
	if c.BodyTimeout == 0 {
		c.BodyTimeout = DefaultBodyTimeout
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.PurgeAllow == nil {
		c.PurgeAllow = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	}
	return c
}

// Validate reports every problem of c at once.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, a...)))
	}
	if len(c.Origins) == 0 && len(c.Sites) == 0 {
		bad("origin", "no origin: set --origin or declare sites in the config file")
	}
	if c.AdminAddr != "" && c.AdminToken == "" && c.AdminClientCAFile == "" && !c.AdminInsecure && !loopback(c.AdminAddr) {
		bad("admin", "%q is beyond loopback: set an admin token or client CA, or admin_insecure to accept the risk", c.AdminAddr)
	}
	if (c.AdminCertFile == "") != (c.AdminKeyFile == "") || (c.AdminClientCAFile != "" && c.AdminCertFile == "") {
		bad("admin_tls", "admin_cert_file and admin_key_file go together, and admin_client_ca_file needs them")
	}
	for _, a := range []struct{ field, addr string }{{"http", c.HTTPAddr}, {"https", c.HTTPSAddr}, {"metrics", c.MetricsAddr}, {"admin", c.AdminAddr}} {
		if a.addr == "" || a.addr == "off" {
			continue
		}
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			bad(a.field, "%q is not host:port", a.addr)
		}
	}
	if c.MemoryBytes < 0 {
		bad("memory", "must not be negative")
	}
	if c.MaxConnections < 0 {
		bad("max_connections", "must not be negative")
	}
	if c.MaxConnectionsPerIP < 0 {
		bad("max_connections_per_ip", "must not be negative")
	}
	if c.DiskBytes < 0 {
		bad("disk", "must not be negative")
	}
	if c.DiskBytes > 0 && c.CacheDir == "" {
		bad("disk", "a disk budget needs a cache_dir")
	}
	if c.MaxObjectSize < 0 {
		bad("max_object_size", "must not be negative")
	} else if c.MemoryBytes > 0 && c.MaxObjectSize > c.MemoryBytes {
		bad("max_object_size", "%s exceeds the memory budget %s", units.Size(c.MaxObjectSize), units.Size(c.MemoryBytes))
	}
	for _, d := range []struct {
		field string
		v     time.Duration
	}{{"fill_timeout", c.FillTimeout}, {"fill_idle_timeout", c.FillIdleTimeout}, {"hit_for_pass", c.HitForPass},
		{"shutdown_timeout", c.ShutdownTimeout}, {"body_timeout", c.BodyTimeout}} {
		if d.v < 0 {
			bad(d.field, "must not be negative")
		}
	}
	if m := c.Mesh; m != nil {
		for i, k := range m.GossipKeys {
			if n := len(k); n != 16 && n != 24 && n != 32 {
				bad("gossip_key", "key %d is %d bytes; want 16, 24 or 32", i+1, n)
			}
		}
		for _, a := range []struct{ field, addr string }{{"peer", m.PeerAddr}, {"gossip", m.GossipAddr}} {
			if a.addr == "" {
				continue
			}
			if _, _, err := net.SplitHostPort(a.addr); err != nil {
				bad(a.field, "%q is not host:port", a.addr)
			}
		}
		if m.PurgeLease != 0 && (m.PurgeLease < 100*time.Millisecond || m.PurgeLease > time.Minute) {
			bad("purge_lease", "%v is not between 100ms and 1m", m.PurgeLease)
		}
		shutdown := c.ShutdownTimeout
		if shutdown == 0 {
			shutdown = DefaultShutdownTimeout
		}
		if m.DrainOnStop < 0 || (m.DrainOnStop > 0 && m.DrainOnStop >= shutdown) {
			bad("drain_on_stop", "%v is not between 0 and node.shutdown_timeout (%v)", m.DrainOnStop, shutdown)
		}
		if m.HandoffWindow != 0 && (m.HandoffWindow < time.Second || m.HandoffWindow > time.Hour) {
			bad("handoff_window", "%v is not between 1s and 1h", m.HandoffWindow)
		}
		if err := m.TLS.Check(); err != nil {
			bad("mesh.tls", "%v", err)
		}
		if risk := MeshRisk(m); risk != "" && !m.Insecure {
			bad("mesh", "%s: anyone who reaches them could join the cluster, purge it and feed it bodies. "+
				"Give a gossip key (--gossip-key or --gossip-key-file) and mesh TLS (--mesh-ca with --mesh-cert and --mesh-key, "+
				"or with --mesh-ca-key); meshcdn ca init makes them. Or listen on 127.0.0.1, run alone with --gossip off, "+
				"or accept the risk with --mesh-insecure (mesh.insecure)", risk)
		}
		if m.CopyShare < 0 || m.CopyShare >= 1 {
			bad("copy_share", "%v is not between 0 and 1", m.CopyShare)
		}
		if err := m.Ring.Validate(); err != nil {
			bad("ring", "%v", err)
		}
	}
	var sites []*site.Site
	for i, sc := range c.Sites {
		s, err := sc.Compile()
		if err != nil {
			errs = append(errs, prefixErrors(fmt.Sprintf("sites[%d]", i), err))
			continue
		}
		sites = append(sites, s)
	}
	errs = append(errs, c.checkHTTPS(sites)...)
	if len(errs) == 0 {
		if _, err := site.NewSet(sites, c.Origins); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// MeshRisk says what a mesh listening beyond loopback lacks, or "" when it
// listens on loopback only or has both a gossip key and mesh TLS.
func MeshRisk(m *MeshConfig) string {
	d := m.WithDefaults()
	var exposed, missing []string
	if !loopback(d.GossipAddr) {
		exposed = append(exposed, fmt.Sprintf("gossip %q", d.GossipAddr))
	}
	if !loopback(d.PeerAddr) {
		exposed = append(exposed, fmt.Sprintf("peer %q", d.PeerAddr))
	}
	if len(m.GossipKeys) == 0 {
		missing = append(missing, "a gossip key")
	}
	if m.TLS == (tlsconf.MeshFiles{}) {
		missing = append(missing, "mesh TLS")
	}
	if len(exposed) == 0 || len(missing) == 0 {
		return ""
	}
	return fmt.Sprintf("%s listen beyond loopback without %s", strings.Join(exposed, " and "), strings.Join(missing, " or "))
}

// Loopback reports whether addr listens on loopback only.
func Loopback(addr string) bool { return loopback(addr) }

func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// prefixErrors puts prefix before each of the joined errors in err.
func prefixErrors(prefix string, err error) error {
	var joined interface{ Unwrap() []error }
	if errors.As(err, &joined) {
		var out []error
		for _, e := range joined.Unwrap() {
			out = append(out, prefixErrors(prefix, e))
		}
		return errors.Join(out...)
	}
	return fmt.Errorf("%s.%w", prefix, err)
}

// File is the YAML configuration file. Every field is optional; command-line
// flags override what it sets.
type File struct {
	Node struct {
		Name    string `yaml:"name"`
		HTTP    string `yaml:"http"`
		HTTPS   string `yaml:"https"`
		HTTP3   bool   `yaml:"http3"`
		ZeroRTT bool   `yaml:"http3_0rtt"`
		H3Port  int    `yaml:"http3_advertised_port"`
		TLSCert string `yaml:"tls_cert_file"`
		TLSKey  string `yaml:"tls_key_file"`
		ACME    *struct {
			Directory string `yaml:"directory"`
			Email     string `yaml:"email"`
			CAFile    string `yaml:"ca_file"`
			Dir       string `yaml:"dir"`
		} `yaml:"acme"`
		Metrics         string         `yaml:"metrics"`
		Memory          units.Size     `yaml:"memory"`
		MaxConns        int            `yaml:"max_connections"`
		MaxConnsPerIP   int            `yaml:"max_connections_per_ip"`
		MaxObjectSize   units.Size     `yaml:"max_object_size"`
		CacheDir        string         `yaml:"cache_dir"`
		Disk            units.Size     `yaml:"disk"`
		FillTimeout     units.Duration `yaml:"fill_timeout"`
		FillIdleTimeout units.Duration `yaml:"fill_idle_timeout"`
		HitForPass      units.Duration `yaml:"hit_for_pass"`
		BodyTimeout     units.Duration `yaml:"body_timeout"`
		ShutdownTimeout units.Duration `yaml:"shutdown_timeout"`
		AccessLog       bool           `yaml:"access_log"`
		Admin           string         `yaml:"admin"`
		AdminTokenFile  string         `yaml:"admin_token_file"`
		AdminInsecure   bool           `yaml:"admin_insecure"`
		StatusTokenFile string         `yaml:"status_token_file"`
		StatusPublic    bool           `yaml:"status_public"`
		AdminCert       string         `yaml:"admin_cert_file"`
		AdminKey        string         `yaml:"admin_key_file"`
		AdminClientCA   string         `yaml:"admin_client_ca_file"`
		PurgeAllow      []string       `yaml:"purge_allow"`
	} `yaml:"node"`
	Origin struct {
		Default        []string       `yaml:"default"`
		ConnectTimeout units.Duration `yaml:"connect_timeout"`
		HeaderTimeout  units.Duration `yaml:"header_timeout"`
		MaxIdle        int            `yaml:"max_idle_per_origin"`
		CAFile         string         `yaml:"ca_file"`
	} `yaml:"origin"`
	Mesh *struct {
		Peer          string            `yaml:"peer"`
		Gossip        string            `yaml:"gossip"`
		Join          []string          `yaml:"join"`
		Region        string            `yaml:"region"`
		ShieldRegion  string            `yaml:"shield_region"`
		GossipKey     string            `yaml:"gossip_key"`
		GossipKeyFile string            `yaml:"gossip_key_file"`
		Insecure      bool              `yaml:"insecure"`
		PurgeLease    units.Duration    `yaml:"purge_lease"`
		HandoffWindow units.Duration    `yaml:"handoff_window"`
		DrainOnStop   units.Duration    `yaml:"drain_on_stop"`
		TLS           tlsconf.MeshFiles `yaml:"tls"`
	} `yaml:"mesh"`
	Sites []site.Config `yaml:"sites"`
}

// origins sets c's default origins and their CA bundle from the file.
func (f *File) origins(name string, c *Config) []error {
	var errs []error
	if f.Origin.CAFile != "" {
		pem, err := os.ReadFile(f.Origin.CAFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: origin.ca_file: %w", name, err))
		} else {
			c.Origin.RootCAs = x509.NewCertPool()
			if !c.Origin.RootCAs.AppendCertsFromPEM(pem) {
				errs = append(errs, fmt.Errorf("%s: origin.ca_file: no PEM certificate in %s", name, f.Origin.CAFile))
			}
		}
	}
	origins, more := parseList(name, "origin.default", f.Origin.Default, site.ParseOrigin)
	c.Origins = append(c.Origins, origins...)
	return append(errs, more...)
}

// parseList parses each of items; an error names the file, field and index.
func parseList[T any](name, field string, items []string, parse func(string) (T, error)) ([]T, []error) {
	var out []T
	var errs []error
	for i, item := range items {
		v, err := parse(item)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %s[%d]: %w", name, field, i, err))
			continue
		}
		out = append(out, v)
	}
	return out, errs
}

// meshConfig is the file's mesh section.
func (f *File) meshConfig(name string) (*MeshConfig, error) {
	m := f.Mesh
	mc := &MeshConfig{PeerAddr: m.Peer, GossipAddr: m.Gossip, Join: m.Join, Region: m.Region, ShieldRegion: m.ShieldRegion,
		PurgeLease: time.Duration(m.PurgeLease), HandoffWindow: time.Duration(m.HandoffWindow),
		DrainOnStop: time.Duration(m.DrainOnStop), Insecure: m.Insecure,
		TLS: m.TLS}
	if m.GossipKey != "" && m.GossipKeyFile != "" {
		return mc, fmt.Errorf("%s: mesh.gossip_key and mesh.gossip_key_file exclude each other", name)
	}
	keys, err := gossip.ParseKeys(m.GossipKey)
	if err != nil {
		return mc, fmt.Errorf("%s: mesh.gossip_key: %w", name, err)
	}
	if m.GossipKeyFile != "" {
		if keys, err = gossip.ReadKeyFile(m.GossipKeyFile); err != nil {
			return mc, fmt.Errorf("%s: mesh.gossip_key_file: %w", name, err)
		}
	}
	mc.GossipKeys = keys
	return mc, nil
}

// ReadToken reads a secret from a file: its first line, trimmed. It must not
// be empty.
func ReadToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	tok, _, _ := strings.Cut(string(b), "\n")
	if tok = strings.TrimSpace(tok); tok == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return tok, nil
}

// LoadFile reads a YAML configuration file into a Config. Unknown fields are
// errors; every error names the file, and the field or line.
func LoadFile(name string) (Config, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return Config{}, err
	}
	return ParseFile(name, data)
}

// ParseFile is LoadFile on data already read; name only labels errors.
func ParseFile(name string, data []byte) (Config, error) {
	var f File
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return Config{}, fmt.Errorf("%s: %w", name, err)
	}
	if errs := yamlkeys.Unknown(&root, reflect.TypeFor[File]()); len(errs) > 0 {
		for i, e := range errs {
			errs[i] = fmt.Errorf("%s: %w", name, e)
		}
		return Config{}, errors.Join(errs...)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, fmt.Errorf("%s: %w", name, err)
	}
	c := Config{
		Name:                f.Node.Name,
		HTTPAddr:            f.Node.HTTP,
		HTTPSAddr:           f.Node.HTTPS,
		HTTP3:               f.Node.HTTP3,
		HTTP3ZeroRTT:        f.Node.ZeroRTT,
		HTTP3AdvertisedPort: f.Node.H3Port,
		TLSCertFile:         f.Node.TLSCert,
		TLSKeyFile:          f.Node.TLSKey,
		MetricsAddr:         f.Node.Metrics,
		MemoryBytes:         int64(f.Node.Memory),
		MaxConnections:      f.Node.MaxConns,
		MaxConnectionsPerIP: f.Node.MaxConnsPerIP,
		MaxObjectSize:       int64(f.Node.MaxObjectSize),
		CacheDir:            f.Node.CacheDir,
		DiskBytes:           int64(f.Node.Disk),
		FillTimeout:         time.Duration(f.Node.FillTimeout),
		FillIdleTimeout:     time.Duration(f.Node.FillIdleTimeout),
		HitForPass:          time.Duration(f.Node.HitForPass),
		BodyTimeout:         time.Duration(f.Node.BodyTimeout),
		ShutdownTimeout:     time.Duration(f.Node.ShutdownTimeout),
		AccessLog:           f.Node.AccessLog,
		AdminAddr:           f.Node.Admin,
		AdminInsecure:       f.Node.AdminInsecure,
		StatusPublic:        f.Node.StatusPublic,
		AdminCertFile:       f.Node.AdminCert,
		AdminKeyFile:        f.Node.AdminKey,
		AdminClientCAFile:   f.Node.AdminClientCA,
		Sites:               f.Sites,
		Origin: origin.Config{
			DialTimeout:    time.Duration(f.Origin.ConnectTimeout),
			HeaderTimeout:  time.Duration(f.Origin.HeaderTimeout),
			MaxIdlePerHost: f.Origin.MaxIdle,
		},
	}
	var errs []error
	c.PurgeAllow, errs = parseList(name, "node.purge_allow", f.Node.PurgeAllow, func(cidr string) (netip.Prefix, error) {
		p, err := netip.ParsePrefix(cidr)
		if err != nil {
			return p, fmt.Errorf("%q is not a CIDR such as 10.0.0.0/8", cidr)
		}
		return p, nil
	})
	if f.Node.AdminTokenFile != "" {
		tok, err := ReadToken(f.Node.AdminTokenFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: node.admin_token_file: %w", name, err))
		}
		c.AdminToken = tok
	}
	if f.Node.StatusTokenFile != "" {
		tok, err := ReadToken(f.Node.StatusTokenFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: node.status_token_file: %w", name, err))
		}
		c.StatusToken = tok
	}
	errs = append(errs, f.origins(name, &c)...)
	if a := f.Node.ACME; a != nil {
		c.ACME = &ACMEConfig{Directory: a.Directory, Email: a.Email, Dir: a.Dir}
		if a.CAFile != "" {
			pem, err := os.ReadFile(a.CAFile)
			c.ACME.Roots = x509.NewCertPool()
			switch {
			case err != nil:
				errs = append(errs, fmt.Errorf("%s: node.acme.ca_file: %w", name, err))
			case !c.ACME.Roots.AppendCertsFromPEM(pem):
				errs = append(errs, fmt.Errorf("%s: node.acme.ca_file: no PEM certificate in %s", name, a.CAFile))
			}
		}
	}
	if f.Mesh != nil {
		var err error
		if c.Mesh, err = f.meshConfig(name); err != nil {
			errs = append(errs, err)
		}
	}
	for i, sc := range f.Sites {
		if _, err := sc.Compile(); err != nil {
			errs = append(errs, prefixErrors(fmt.Sprintf("%s: sites[%d]", name, i), err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return Config{}, err
	}
	return c, nil
}

// checkHTTPS checks that the HTTPS settings agree: certificates and the
// policies that send clients to HTTPS need an HTTPS listener, which needs a
// certificate.
func (c Config) checkHTTPS(sites []*site.Site) []error {
	var errs []error
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		errs = append(errs, errors.New("tls_cert_file and tls_key_file go together"))
	}
	certs := c.TLSCertFile != ""
	for i, s := range sites {
		certs = certs || len(s.Certificates) > 0
		if c.HTTPSAddr != "" {
			continue
		}
		if len(s.Certificates) > 0 {
			errs = append(errs, fmt.Errorf("sites[%d].certificates: no HTTPS listener to serve them: set node.https (--https)", i))
		}
		if s.HTTPS != site.HTTPSAllow {
			errs = append(errs, fmt.Errorf("sites[%d].https: %s sends clients to HTTPS, but there is no HTTPS listener: set node.https (--https)", i, s.HTTPS))
		}
	}
	acme := false
	for i, s := range sites {
		if !s.ACME {
			continue
		}
		acme = true
		if c.ACME == nil {
			errs = append(errs, fmt.Errorf("sites[%d].acme: no certificate authority: set node.acme.directory", i))
		}
		if c.HTTPSAddr == "" {
			errs = append(errs, fmt.Errorf("sites[%d].acme: no HTTPS listener to serve the certificate: set node.https (--https)", i))
		}
	}
	if a := c.ACME; a != nil {
		if u, err := url.Parse(a.Directory); err != nil || u.Scheme != "https" || u.Host == "" {
			errs = append(errs, fmt.Errorf("acme.directory: %q is not an https URL (Let's Encrypt: https://acme-v02.api.letsencrypt.org/directory)", a.Directory))
		}
		if a.Dir == "" && c.CacheDir == "" {
			errs = append(errs, errors.New("acme.dir: where the account key and certificates are kept: set it, or a cache_dir (then cache_dir/acme)"))
		}
	}
	certs = certs || acme
	if c.HTTP3 && c.HTTPSAddr == "" {
		errs = append(errs, errors.New("http3: HTTP/3 shares the HTTPS listener's address and certificates: set node.https (--https)"))
	}
	if c.HTTP3ZeroRTT && !c.HTTP3 {
		errs = append(errs, errors.New("http3_0rtt: 0-RTT is HTTP/3's: set node.http3 (--http3)"))
	}
	switch p := c.HTTP3AdvertisedPort; {
	case p != 0 && !c.HTTP3:
		errs = append(errs, errors.New("http3_advertised_port: the port Alt-Svc names for HTTP/3: set node.http3 (--http3)"))
	case p < 0 || p > 65535:
		errs = append(errs, fmt.Errorf("http3_advertised_port: %d is not a port (1 to 65535)", p))
	}
	if c.HTTPSAddr != "" && !certs {
		errs = append(errs, errors.New("https: the HTTPS listener has no certificate: give tls_cert_file and tls_key_file (--tls-cert, --tls-key) or a site's certificates"))
	}
	return errs
}

// ACMEConfig is the ACME certificate authority of the sites with acme: true.
type ACMEConfig struct {
	// Directory is the CA's directory URL (Let's Encrypt:
	// https://acme-v02.api.letsencrypt.org/directory).
	Directory string
	// Email is the account's contact, optional.
	Email string
	// Roots, when set, are the only CAs trusted for the ACME server's own
	// HTTPS (a test CA's); nil trusts the system's.
	Roots *x509.CertPool
	// Dir keeps the account key and the certificates. Default: CacheDir/acme.
	Dir string
}
