package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/meshcdn/meshcdn/gossip"
	"github.com/meshcdn/meshcdn/internal/gcfloor"
	"github.com/meshcdn/meshcdn/internal/units"
	"github.com/meshcdn/meshcdn/node"
	"github.com/meshcdn/meshcdn/node/site"
)

// edgeFlags are the one-site flags of `meshcdn edge`. Each is also read from
// MESHCDN_<NAME> (upper case, - as _); a flag on the command line wins over
// the environment, which wins over the config file.
type edgeFlags struct {
	config, name, http, metrics, origin string
	https, tlsCert, tlsKey              string
	cacheDir                            string
	region, shieldRegion                string
	meshFlags
	admin, adminToken, adminTokenFile  string
	adminCert, adminKey, adminClientCA string
	adminInsecure                      bool
	statusToken, statusTokenFile       string
	statusPublic                       bool
	memory, maxObject, disk            units.Size
	maxConns, maxConnsPerIP            int
	accessLog                          bool
	http3, zeroRTT                     bool
	h3Port                             int
	logFormat, logLevel                string
	set                                map[string]bool // flags given on the command line or in the environment
}

func (f *edgeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.config, "config", "", "YAML configuration `file` (sites, rules, node settings)")
	fs.StringVar(&f.name, "name", "", "node name (default: host name)")
	fs.StringVar(&f.http, "http", "", "client HTTP listen `address` (default "+node.DefaultHTTPAddr+")")
	fs.StringVar(&f.https, "https", "", "client HTTPS listen `address` (TLS 1.2 and 1.3, HTTP/2 and HTTP/1.1); off when empty")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "default certificate `file` of the HTTPS listener (PEM, the chain after the leaf)")
	fs.StringVar(&f.tlsKey, "tls-key", "", "key `file` of --tls-cert")
	fs.StringVar(&f.metrics, "metrics", "", "metrics and health listen `address`, or off (default "+node.DefaultMetricsAddr+")")
	fs.StringVar(&f.origin, "origin", "", "origin `URL[,URL...]` for any host no site names")
	fs.Var(&f.memory, "memory", "memory tier budget, e.g. 256MiB (default 256MiB)")
	fs.Var(&f.maxObject, "max-object-size", "largest body the memory tier stores (default: memory/8)")
	fs.IntVar(&f.maxConns, "max-connections", 0, "client connections open at once, HTTP and HTTPS together; past it idle ones are closed first (default: memory/64KiB, at least 1024)")
	fs.IntVar(&f.maxConnsPerIP, "max-connections-per-ip", 0, "client connections of one address (default 256)")
	fs.StringVar(&f.cacheDir, "cache-dir", "", "disk tier `directory` (off when empty); survives restarts")
	fs.Var(&f.disk, "disk", "disk tier budget, e.g. 10GiB (default 1GiB)")
	f.meshFlags.register(fs, "; off runs the node alone")
	fs.StringVar(&f.region, "region", "", "this node's region: a key has one owner per region")
	fs.StringVar(&f.shieldRegion, "shield-region", "", "the region in front of the origin: other regions fill from its owners first (none: each region asks the origin)")
	fs.StringVar(&f.admin, "admin", "127.0.0.1:7071", "gRPC admin listen `address`, or off")
	fs.StringVar(&f.adminToken, "admin-token", "", "bearer `token` required on admin calls (health excepted)")
	fs.StringVar(&f.adminTokenFile, "admin-token-file", "", "read the admin token from this `file`")
	fs.StringVar(&f.adminCert, "admin-cert", "", "certificate `file`: the admin listener speaks TLS")
	fs.StringVar(&f.adminKey, "admin-key", "", "key `file` of --admin-cert")
	fs.StringVar(&f.adminClientCA, "admin-client-ca", "", "require admin clients to show an admin certificate (meshcdn ca issue --role admin) this CA `file` signed")
	fs.BoolVar(&f.adminInsecure, "admin-insecure", false, "allow an admin listener beyond loopback without a token")
	fs.StringVar(&f.statusToken, "status-token", "", "`token` that opens the status page of a metrics listener beyond loopback (the admin token opens it too)")
	fs.StringVar(&f.statusTokenFile, "status-token-file", "", "read the status token from this `file`")
	fs.BoolVar(&f.statusPublic, "status-public", false, "serve the status page beyond loopback without a token")
	fs.BoolVar(&f.accessLog, "access-log", false, "log one line per request")
	fs.BoolVar(&f.http3, "http3", false, "serve HTTP/3 over QUIC on the UDP port of --https")
	fs.BoolVar(&f.zeroRTT, "http3-0rtt", false, "take GET and HEAD in HTTP/3's 0-RTT early data (others get 425)")
	fs.IntVar(&f.h3Port, "http3-advertised-port", 0, "the UDP `port` Alt-Svc names for HTTP/3, where clients reach it on another port than --https's (default: that one)")
	fs.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
}

// parseFlags parses args, then fills every flag not given on the command line
// from the environment.
func parseFlags(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	return parseFlagsSet(fs, args, getenv, nil)
}

// parseFlagsSet is parseFlags that also records in setFlags which flags were
// given, on the command line or in the environment.
func parseFlagsSet(fs *flag.FlagSet, args []string, getenv func(string) string, setFlags map[string]bool) error {
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if setFlags != nil {
		defer fs.Visit(func(f *flag.Flag) { setFlags[f.Name] = true })
	}
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		env := "MESHCDN_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := getenv(env); v != "" && !set[f.Name] {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", env, v, err))
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		return usageError{err: err}
	}
	return nil
}

// parseArgs parses flags only, without positional arguments: a usage error
// names what is wrong; -h prints the usage and comes back as flag.ErrHelp.
func parseArgs(fs *flag.FlagSet, args []string) error {
	if err := parseFlagsOnly(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{err: fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	return nil
}

// parseFlagsOnly parses the flags up to the first positional argument, as
// fs.Parse, but the flag package's own output (the error, then the whole
// usage, burying the error) is left out: run prints the error alone, with a
// hint; -h prints the usage.
func parseFlagsOnly(fs *flag.FlagSet, args []string) error {
	out := fs.Output()
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	fs.SetOutput(out)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.Usage()
		return err
	case err != nil:
		return usageError{err: err}
	}
	return nil
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, usageError{err: fmt.Errorf("--log-level %q: want debug, info, warn or error", level)}
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usageError{err: fmt.Errorf("--log-format %q: want text or json", format)}
}

// edgeConfig builds the node configuration: file, then flags over it.
func (f *edgeFlags) edgeConfig(logw io.Writer) (node.Config, error) {
	var cfg node.Config
	if f.config != "" {
		c, err := node.LoadFile(f.config)
		if err != nil {
			return cfg, usageError{err: err}
		}
		cfg = c
	}
	override(&cfg.Name, f.name)
	override(&cfg.HTTPAddr, f.http)
	override(&cfg.HTTPSAddr, f.https)
	override(&cfg.TLSCertFile, f.tlsCert)
	override(&cfg.TLSKeyFile, f.tlsKey)
	override(&cfg.MetricsAddr, f.metrics)
	if f.memory != 0 {
		cfg.MemoryBytes = int64(f.memory)
	}
	if f.maxObject != 0 {
		cfg.MaxObjectSize = int64(f.maxObject)
	}
	if f.maxConns != 0 {
		cfg.MaxConnections = f.maxConns
	}
	if f.maxConnsPerIP != 0 {
		cfg.MaxConnectionsPerIP = f.maxConnsPerIP
	}
	if f.cacheDir != "" {
		cfg.CacheDir = f.cacheDir
	}
	if f.disk != 0 {
		cfg.DiskBytes = int64(f.disk)
	}
	if f.accessLog {
		cfg.AccessLog = true
	}
	if f.http3 {
		cfg.HTTP3 = true
	}
	if f.zeroRTT {
		cfg.HTTP3ZeroRTT = true
	}
	if f.h3Port != 0 {
		cfg.HTTP3AdvertisedPort = f.h3Port
	}
	if err := f.meshConfig(&cfg); err != nil {
		return cfg, usageError{err: err}
	}
	if err := f.adminConfig(&cfg); err != nil {
		return cfg, usageError{err: err}
	}
	if f.origin != "" {
		cfg.Origins = nil
		for o := range strings.SplitSeq(f.origin, ",") {
			u, err := site.ParseOrigin(o)
			if err != nil {
				return cfg, usageError{err: fmt.Errorf("--origin: %w", err)}
			}
			cfg.Origins = append(cfg.Origins, u)
		}
	}
	lg, err := newLogger(logw, f.logFormat, f.logLevel)
	if err != nil {
		return cfg, err
	}
	cfg.Logger = lg
	if err := cfg.Validate(); err != nil {
		if f.config != "" {
			err = fmt.Errorf("%s: %w", f.config, err)
		}
		return cfg, usageError{err: err}
	}
	return cfg, nil
}

// adminConfig applies the admin flags over the file's settings.
func (f *edgeFlags) adminConfig(cfg *node.Config) error {
	cfg.Version = version
	switch {
	case f.admin == "off" && f.set["admin"], cfg.AdminAddr == "off" && !f.set["admin"]:
		cfg.AdminAddr = "" // off on the command line, or in the file and not overridden
	case cfg.AdminAddr == "" || f.set["admin"]:
		cfg.AdminAddr = f.admin
	}
	if err := tokenFlags(&cfg.AdminToken, f.adminToken, f.adminTokenFile, "admin-token-file"); err != nil {
		return err
	}
	if f.adminInsecure {
		cfg.AdminInsecure = true
	}
	if err := tokenFlags(&cfg.StatusToken, f.statusToken, f.statusTokenFile, "status-token-file"); err != nil {
		return err
	}
	if f.statusPublic {
		cfg.StatusPublic = true
	}
	override(&cfg.AdminCertFile, f.adminCert)
	override(&cfg.AdminKeyFile, f.adminKey)
	override(&cfg.AdminClientCAFile, f.adminClientCA)
	return nil
}

// tokenFlags applies a token's flags over *dst: the first line of the file
// the flag named fileFlag gives, then the token given itself.
func tokenFlags(dst *string, token, file, fileFlag string) error {
	if file != "" {
		tok, err := node.ReadToken(file)
		if err != nil {
			return fmt.Errorf("--%s: %w", fileFlag, err)
		}
		*dst = tok
	}
	override(dst, token)
	return nil
}

// override sets *dst to a flag's value when the flag was given.
func override(dst *string, v string) {
	if v != "" {
		*dst = v
	}
}

// meshConfig applies the mesh flags: the mesh is on unless --gossip off.
func (f *edgeFlags) meshConfig(cfg *node.Config) error {
	if f.gossip == "off" {
		cfg.Mesh = nil
		return nil
	}
	if cfg.Mesh == nil {
		cfg.Mesh = &node.MeshConfig{}
	}
	if f.region != "" {
		cfg.Mesh.Region = f.region
	}
	if f.shieldRegion != "" {
		cfg.Mesh.ShieldRegion = f.shieldRegion
	}
	return f.meshFlags.apply(cfg.Mesh)
}

// meshFlags are the flags of a mesh member, edge or router.
type meshFlags struct {
	peer, gossip, join, key              string
	meshCA, meshCert, meshKey, meshCAKey string
	keyFile                              string
	meshInsecure                         bool
}

// register adds the mesh flags to fs; gossipOff says what --gossip off does.
func (f *meshFlags) register(fs *flag.FlagSet, gossipOff string) {
	fs.StringVar(&f.peer, "peer", "", "gRPC peer listen `address` (default :7070)")
	fs.StringVar(&f.gossip, "gossip", "", "gossip listen `address`, TCP and UDP (default :7946)"+gossipOff)
	fs.StringVar(&f.join, "join", "", "gossip seeds `host:port[,...]`; a DNS name joins every address it resolves to")
	fs.StringVar(&f.key, "gossip-key", "", "gossip encryption keys, base64 of 16, 24 or 32 bytes each, comma-separated: the first sends, all are accepted")
	fs.StringVar(&f.meshCA, "mesh-ca", "", "cluster CA certificate `file`: peers must show a certificate it signed")
	fs.StringVar(&f.meshCert, "mesh-cert", "", "this node's certificate `file` for mutual TLS between peers (meshcdn ca issue)")
	fs.StringVar(&f.meshKey, "mesh-key", "", "this node's key `file` for mutual TLS between peers")
	fs.StringVar(&f.meshCAKey, "mesh-ca-key", "", "the cluster CA's key `file`, instead of --mesh-cert and --mesh-key: the node signs its own certificate")
	fs.StringVar(&f.keyFile, "gossip-key-file", "", "read the gossip keys from this `file` (one per line, the first sends)")
	fs.BoolVar(&f.meshInsecure, "mesh-insecure", false, "allow gossip and peer listeners beyond loopback without a gossip key and mesh TLS")
}

// apply sets the flags given over m.
func (f *meshFlags) apply(m *node.MeshConfig) error {
	override(&m.PeerAddr, f.peer)
	override(&m.GossipAddr, f.gossip)
	if f.join != "" {
		m.Join = nil
		for s := range strings.SplitSeq(f.join, ",") {
			if s = strings.TrimSpace(s); s != "" {
				m.Join = append(m.Join, s)
			}
		}
	}
	override(&m.TLS.CAFile, f.meshCA)
	override(&m.TLS.CertFile, f.meshCert)
	override(&m.TLS.KeyFile, f.meshKey)
	override(&m.TLS.CAKeyFile, f.meshCAKey)
	if f.meshInsecure {
		m.Insecure = true
	}
	switch {
	case f.key != "" && f.keyFile != "":
		return errors.New("--gossip-key and --gossip-key-file exclude each other")
	case f.key != "":
		keys, err := gossip.ParseKeys(f.key)
		if err != nil {
			return fmt.Errorf("--gossip-key: %w", err)
		}
		m.GossipKeys = keys
	case f.keyFile != "":
		keys, err := gossip.ReadKeyFile(f.keyFile)
		if err != nil {
			return fmt.Errorf("--gossip-key-file: %w", err)
		}
		m.GossipKeys = keys
	}
	return nil
}

// memoryLimit is the Go runtime's soft memory limit for an edge with a
// memory tier budget of budget bytes: the budget, a quarter more for what
// the collector has not freed yet, and 64 MiB for everything else
// (connections, streaming buffers, the disk tier's writers).
func memoryLimit(budget int64) int64 { return budget + budget/4 + 64<<20 }

// setMemoryLimit bounds the process's heap by the memory budget, so that a
// container sized to the budget is not killed (without it the heap grows to
// twice what is live before a collection). GOMEMLIMIT, when set, wins.
func setMemoryLimit(cfg node.Config, getenv func(string) string) {
	if getenv("GOMEMLIMIT") != "" {
		cfg.Logger.Info("memory limit from GOMEMLIMIT", "limit", getenv("GOMEMLIMIT"))
		return
	}
	budget := cfg.MemoryBytes
	if budget == 0 {
		budget = node.DefaultMemory
	}
	limit := memoryLimit(budget)
	debug.SetMemoryLimit(limit)
	cfg.Logger.Info("memory limit set from the memory budget (GOMEMLIMIT overrides it)", "limit", units.Size(limit))
}

// gcFloor is the heap the collector lets grow before it runs, however
// little is live: the 64 MiB memoryLimit allows for everything beside the
// cache. Without it a node with a small live heap collected 80 times a
// second under 40,000 hits a second (GOGC's 4 MiB minimum goal).
const gcFloor = 64 << 20

// startGCFloor starts the collector's floor, unless GOGC is set (which
// then wins). The caller stops it.
func startGCFloor(log *slog.Logger, getenv func(string) string) *gcfloor.Floor {
	if getenv("GOGC") != "" {
		log.Info("collector percentage from GOGC", "GOGC", getenv("GOGC"))
		return nil
	}
	f := gcfloor.Start(gcFloor)
	if f != nil {
		log.Info("collector floor set (GOGC overrides it)", "floor", units.Size(gcFloor), "gogc", f.Percent())
	}
	return f
}

// reloadBudgets reads the configuration again, as at start, and puts the
// sites' origin budgets in force (see node.Node.ReloadBudgets).
func reloadBudgets(n *node.Node, f *edgeFlags, stderr io.Writer) {
	next, err := f.edgeConfig(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "meshcdn: reload: %v (the origin budgets in force stay)\n", err)
		return
	}
	if err := n.ReloadBudgets(next); err != nil {
		fmt.Fprintf(stderr, "meshcdn: reload: %v\n", err)
	}
}

func runEdge(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("meshcdn edge", flag.ContinueOnError)
	setUsage(fs, stdout, "Usage: meshcdn edge [--config FILE] [flags]\n\nRuns an edge node. Every flag may also come from the environment as MESHCDN_<FLAG>\n(--cache-dir: MESHCDN_CACHE_DIR); flags win over the environment, which wins over the file.\n")
	var f edgeFlags
	f.register(fs)
	f.set = map[string]bool{}
	if err := parseFlagsSet(fs, args, os.Getenv, f.set); err != nil {
		return err
	}
	cfg, err := f.edgeConfig(stderr)
	if err != nil {
		return err
	}
	setMemoryLimit(cfg, os.Getenv)
	defer startGCFloor(cfg.Logger, os.Getenv).Stop()
	n, err := node.New(cfg)
	if err != nil {
		return usageError{err: err}
	}
	// SIGHUP reloads what can change without a restart: the certificates,
	// for rotation, and the sites' origin budgets from the config file.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	if err := n.Start(ctx); err != nil {
		return err
	}
	for {
		select {
		case <-hup:
			if err := n.Reload(); err != nil {
				fmt.Fprintf(stderr, "meshcdn: reload: %v (the certificates in use stay)\n", err)
			}
			if f.config != "" {
				reloadBudgets(n, &f, stderr)
			}
			continue
		case <-ctx.Done():
		}
		break
	}
	timeout := cfg.ShutdownTimeout
	if timeout == 0 {
		timeout = node.DefaultShutdownTimeout
	}
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return n.Shutdown(sctx)
}
