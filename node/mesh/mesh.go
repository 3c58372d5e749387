// Package mesh is where gossip, the ring and the peer protocol meet. A Mesh
// serves the peer protocol, keeps the node in gossip with its metadata,
// rebuilds a consistent-hash ring of owners on every membership change and
// remembers the rings it replaced for a while, so a new owner can take a
// key over from where it was (hand-off). It drains a node out of the ring
// and offers its hottest objects to their new owners.
//
// It sees its node only through what Self declares: an http.Handler that
// answers peers' fetches, a peer.Local for the other peer calls, and a
// narrow view of the memory tier.
package mesh

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/meshcdn/meshcdn/gossip"
	"github.com/meshcdn/meshcdn/node/cache"
	"github.com/meshcdn/meshcdn/node/peer"
	"github.com/meshcdn/meshcdn/node/tlsconf"
	peerv1 "github.com/meshcdn/meshcdn/proto/meshcdn/peer/v1"
)

// Store is the node's memory tier as a draining node offers it.
type Store interface {
	// Hottest returns up to limit keys, hottest first.
	Hottest(limit int) []string
	// Get returns what is stored under key.
	Get(key string) (*cache.Object, bool)
}

// Self is the node a mesh belongs to.
type Self struct {
	// Name is the node's name in gossip and on the ring. Required.
	Name string
	// Version is advertised to the others.
	Version string
	// HTTPAddr and AdminAddr are the node's bound client and admin
	// addresses, advertised to the others (AdminAddr empty: none).
	HTTPAddr, AdminAddr string
	// Handler answers peers' fetches; requests carry peer.FromPeer.
	Handler http.Handler
	// Local answers the other peer calls.
	Local peer.Local
	// Store is offered from when the node drains.
	Store Store
	// Changed, if set, is called after the ring loop has handled a
	// membership change. It must not block.
	Changed func()
	// Logger receives the mesh's logs. Nil discards them.
	Logger *slog.Logger
	// Router makes the node a member that owns nothing: it is in no ring,
	// takes no peer calls (its peer listener proves its name and answers
	// health checks only) and only watches the edges. Handler, Local and
	// Store are unused then.
	Router bool
}

// Mesh is a node's running membership of the mesh. Create it with New,
// Start it, then Leave and Stop it. Its methods are safe for concurrent use
// once Start has returned.
type Mesh struct {
	cfg  Config
	self Self
	log  *slog.Logger

	gossip   *gossip.Gossip
	view     atomic.Pointer[gossip.Gossip] // gossip, for the peer server's checks, which may run before Start returns
	ring     atomic.Pointer[snapshot]
	addrs    atomic.Pointer[map[string]string] // member → peer address
	regions  atomic.Pointer[regionRings]
	epoch    atomic.Uint64
	peers    *peer.Pool
	tls      *tlsconf.Mesh // nil: cleartext between peers
	grpc     *grpc.Server
	health   *health.Server
	peerLn   net.Listener
	started  time.Time
	draining atomic.Bool // out of the ring; still answers as a non-owner and to hand-offs
	// handedOff is closed when a drain's offers have ended; handOff then
	// holds how they went.
	handedOff         chan struct{}
	handOff           peer.HandOff
	offered, declined atomic.Uint64 // offers taken and not taken, for metrics

	trust   trust
	recheck chan struct{} // a member proved its name: rebuild

	ctx    context.Context // ends at Stop; the loops derive from it
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New returns a mesh for self with cfg's defaults in place. It opens no
// socket.
func New(cfg Config, self Self) *Mesh {
	if self.Logger == nil {
		self.Logger = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.WithDefaults()
	m := &Mesh{cfg: cfg, self: self, log: self.Logger, handedOff: make(chan struct{}), recheck: make(chan struct{}, 1),
		trust: trust{proven: map[string]string{}, pending: map[string]bool{}, failed: map[string]time.Time{}}}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	return m
}

// Config is the configuration in force, defaults included.
func (m *Mesh) Config() Config { return m.cfg }

// Start binds the peer listener, joins gossip and starts the ring loop. ctx
// bounds the start only.
func (m *Mesh) Start(ctx context.Context) error {
	m.started = time.Now()
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", m.cfg.PeerAddr)
	if err != nil {
		return fmt.Errorf("mesh: peer listener: %w", err)
	}
	m.peerLn = ln
	opts, err := m.startTLS()
	if err != nil {
		_ = ln.Close()
		return err
	}
	m.grpc = grpc.NewServer(opts...)
	m.health = health.NewServer()
	healthpb.RegisterHealthServer(m.grpc, m.health)
	reflection.Register(m.grpc)
	if !m.self.Router {
		peerv1.RegisterPeerServiceServer(m.grpc, peer.NewServer(m.self.Handler, m.self.Local, m.Draining, m.log.With("component", "peer")))
		m.health.SetServingStatus(peerv1.PeerService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	}
	m.wg.Go(func() {
		if err := m.grpc.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			m.log.Error("peer listener failed", "err", err)
		}
	})
	g, err := gossip.New(gossip.Config{
		Name: m.self.Name, BindAddr: m.cfg.GossipAddr, Join: m.cfg.Join, Keys: m.cfg.GossipKeys, Fast: m.cfg.Fast, PushPull: m.pushPull(),
		Meta: gossip.Meta{HTTPAddr: Advertised(m.self.HTTPAddr), PeerAddr: Advertised(ln.Addr().String()),
			AdminAddr: Advertised(m.self.AdminAddr), Region: m.cfg.Region, Version: m.self.Version, Started: m.started.UnixMilli(),
			Router: m.self.Router},
		Logger: m.log.With("component", "gossip"),
	})
	if err == nil {
		err = g.Start(ctx)
	}
	if err != nil {
		m.grpc.Stop()
		m.cancel()
		m.wg.Wait()
		return fmt.Errorf("mesh: %w", err)
	}
	m.gossip = g
	m.view.Store(g)
	m.Rebuild()
	m.wg.Go(m.loop)
	if m.tls != nil {
		m.wg.Go(m.watchTLS)
	}
	return nil
}

// loop rebuilds the ring on every membership change.
func (m *Mesh) loop() {
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-m.gossip.Changed():
		case <-m.recheck:
		}
		if m.Rebuild() && m.self.Changed != nil {
			m.self.Changed()
		}
	}
}

// routerPushPull is how often a router exchanges its whole view of the
// cluster with a member: an edge's readiness and load reach it by gossip,
// and an update gossip lost (sent mostly to members that had just died,
// say) would otherwise wait for memberlist's 30 s exchange. A router
// sends users by that view, and one exchange every 5 s costs a member
// little.
const routerPushPull = 5 * time.Second

// pushPull is the node's full-state exchange interval: the default, but a
// router's.
func (m *Mesh) pushPull() time.Duration {
	if m.self.Router && !m.cfg.Fast {
		return routerPushPull
	}
	return 0
}

// Advertised turns a bound address into one others can dial: an unspecified
// host ("[::]:7070") becomes loopback only when nothing better is known.
// Empty stays empty.
func Advertised(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		if ips, err := net.InterfaceAddrs(); err == nil {
			for _, a := range ips {
				if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil {
					return net.JoinHostPort(ipn.IP.String(), port)
				}
			}
		}
		return net.JoinHostPort("127.0.0.1", port)
	}
	return addr
}

// Leave tells the peer health service and the others that this node goes:
// they move its keys away before it stops answering.
func (m *Mesh) Leave() error {
	m.health.Shutdown()
	return m.gossip.Leave(m.cfg.LeaveTimeout)
}

// Stop drains peer calls until ctx ends (then cuts them off), leaves gossip,
// ends the loops and closes the peer connections. It returns when every
// goroutine of the mesh has ended.
func (m *Mesh) Stop(ctx context.Context) error {
	stop := context.AfterFunc(ctx, m.grpc.Stop)
	m.grpc.GracefulStop()
	stop()
	err := m.gossip.Shutdown()
	m.cancel()
	m.wg.Wait()
	m.peers.CloseAll()
	return err
}

// StopServing stops the peer service at once, as a crash would, while
// gossip goes on: for tests of gray failures. Stop still cleans up.
func (m *Mesh) StopServing() { m.grpc.Stop() }

// Halt stops the peer service and gossip at once, without leaving, as a
// crash would: for tests. Stop still cleans up.
func (m *Mesh) Halt() {
	m.grpc.Stop()
	_ = m.gossip.Shutdown()
}

// Peers is the pool of connections to the other members.
func (m *Mesh) Peers() *peer.Pool { return m.peers }

// PeerAddr is the bound peer address.
func (m *Mesh) PeerAddr() string { return m.peerLn.Addr().String() }

// GossipAddr is the bound gossip address.
func (m *Mesh) GossipAddr() string { return m.gossip.Addr() }

// Member is one live member of the cluster.
type Member struct {
	Name, State, Region                       string
	HTTPAddr, PeerAddr, GossipAddr, AdminAddr string
	Version                                   string
	Self                                      bool
	Ready                                     bool // takes client traffic
	Load                                      int  // client requests in flight
	Router                                    bool // owns nothing; sends users to edges
}

// Certificate is the node's mesh certificate; nil without mesh TLS.
func (m *Mesh) Certificate() *x509.Certificate {
	if m.tls == nil {
		return nil
	}
	return m.tls.Leaf()
}

// Members lists the live edges, this node included, with their state:
// alive, leaving, draining or untrusted. Routers are not among them: they
// own nothing and are asked for nothing (see Routers).
func (m *Mesh) Members() []Member { return m.members(false) }

// Routers lists the live routers, in the form of Members.
func (m *Mesh) Routers() []Member { return m.members(true) }

func (m *Mesh) members(routers bool) []Member {
	var out []Member
	for _, g := range m.gossip.Members() {
		if g.Meta.Router != routers {
			continue
		}
		state := "alive"
		switch {
		case g.Meta.Leaving:
			state = "leaving"
		case !m.trusted(g.Name, g.Meta.PeerAddr):
			state = "untrusted"
		case g.Meta.Draining || (g.Name == m.self.Name && m.draining.Load()):
			state = "draining"
		}
		out = append(out, Member{Name: g.Name, State: state, Region: g.Meta.Region, HTTPAddr: g.Meta.HTTPAddr,
			PeerAddr: g.Meta.PeerAddr, GossipAddr: g.Addr, AdminAddr: g.Meta.AdminAddr, Version: g.Meta.Version,
			Self: g.Name == m.self.Name, Ready: g.Meta.Ready, Load: g.Meta.Load, Router: g.Meta.Router})
	}
	return out
}

// Failed lists the members that failed within the last hour.
func (m *Mesh) Failed() []gossip.Failure { return m.gossip.Failed() }

// Failures counts the member failures seen since the start.
func (m *Mesh) Failures() uint64 { return m.gossip.Failures() }

// PeerAddrs maps the members of the last ring rebuild, draining ones and
// this node included, to their peer addresses.
func (m *Mesh) PeerAddrs() map[string]string { return *m.addrs.Load() }

// Alone reports whether this node has tried to join and knows no other
// member (with mesh TLS, none that has proven its name).
func (m *Mesh) Alone() bool {
	if !m.gossip.JoinTried() || len(*m.addrs.Load()) > 1 {
		return false
	}
	others := 0
	for _, g := range m.gossip.Members() {
		if g.Name != m.self.Name && !g.Meta.Router && m.trusted(g.Name, g.Meta.PeerAddr) {
			others++
		}
	}
	return others == 0
}

// SetStatus advertises whether this node takes client traffic and its
// requests in flight.
func (m *Mesh) SetStatus(ready bool, load int) error {
	return m.gossip.SetStatus(ready, load, m.cfg.LeaveTimeout)
}
