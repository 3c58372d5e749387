package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/meshcdn/meshcdn/gossip"
	"github.com/meshcdn/meshcdn/node/peer"
	peerv1 "github.com/meshcdn/meshcdn/proto/meshcdn/peer/v1"
	"github.com/meshcdn/meshcdn/ring"
)

// MeshConfig joins the node to a mesh of edges: gossip membership, a
// consistent-hash ring of owners, and gRPC fetches from the owner before the
// origin. Zero fields take their defaults.
type MeshConfig struct {
	// PeerAddr is the gRPC peer listener. Default ":7070".
	PeerAddr string
	// GossipAddr is the memberlist listener (TCP and UDP). Default ":7946".
	GossipAddr string
	// Join lists gossip seeds (host:port, or a DNS name resolving to many).
	Join []string
	// Region is advertised to the other nodes.
	Region string
	// GossipKey encrypts gossip (16, 24 or 32 bytes); every node needs it.
	GossipKey []byte
	// Ring tunes the consistent-hash ring.
	Ring ring.Config
	// PeerTimeout bounds the wait for a peer's response head before the origin
	// is asked instead. Default 5s.
	PeerTimeout time.Duration
	// LeaveTimeout bounds the announcement of a graceful leave. Default 2s.
	LeaveTimeout time.Duration
	// HandoffWindow is how long after a ring change a new owner that misses
	// asks the key's previous owner (from its cache only) before the origin.
	// Default 2m.
	HandoffWindow time.Duration
	// JoinWave groups nodes that start within this long of each other (a
	// scale-out): a node of a wave takes keys over from the members that
	// were there before the wave, not from the others of its wave.
	// Default 10s.
	JoinWave time.Duration
	// CopyShare is the share of the memory budget that holds copies of objects
	// other nodes own, so hot objects are served locally everywhere while cold
	// ones exist once per cluster. Default 0.2.
	CopyShare float64
	// PurgeLease is how long a node trusts its purge log after reading
	// another member's: past it, until a member answers, the node revalidates
	// objects older than the lease before serving them. A purge that a member
	// did not acknowledge is answered no sooner than this. Default 2s.
	PurgeLease time.Duration
	// DrainOnStop, when set, makes a stopping node drain first and keep
	// answering for this long before it leaves, so the new owners of its keys
	// take the objects asked for meanwhile over from it rather than from the
	// origin. It must be shorter than Config.ShutdownTimeout. Default 0: a
	// stopping node leaves at once.
	DrainOnStop time.Duration
	// Fast uses gossip timings for tests on loopback.
	Fast bool
}

// fastJoinWave is JoinWave's default with the Fast gossip profile.
const fastJoinWave = 300 * time.Millisecond

func (m *MeshConfig) withDefaults() {
	if m.PeerAddr == "" {
		m.PeerAddr = ":7070"
	}
	if m.GossipAddr == "" {
		m.GossipAddr = ":7946"
	}
	if m.PeerTimeout == 0 {
		m.PeerTimeout = 5 * time.Second
	}
	if m.LeaveTimeout == 0 {
		m.LeaveTimeout = 2 * time.Second
	}
	if m.HandoffWindow == 0 {
		m.HandoffWindow = 2 * time.Minute
	}
	if m.JoinWave == 0 {
		m.JoinWave = 10 * time.Second
		if m.Fast {
			m.JoinWave = fastJoinWave
		}
	}
	if m.CopyShare == 0 {
		m.CopyShare = 0.2
	}
	if m.PurgeLease == 0 {
		m.PurgeLease = 2 * time.Second
	}
}

// snapshot is a ring and the rings it replaced, newest first, while their
// hand-off windows last: where keys were before.
type snapshot struct {
	ring *ring.Ring
	past []pastRing
}

// pastRing is a ring that another replaced, and until when a new owner asks
// its owners before the origin.
type pastRing struct {
	ring  *ring.Ring
	until time.Time
}

// maxPastRings bounds how many replaced rings a miss may consult: a burst of
// changes (two nodes drained one after the other) moves a key more than once
// before anybody asks for it.
const maxPastRings = 3

// mesh is the running mesh part of a node.
type mesh struct {
	cfg      MeshConfig
	gossip   *gossip.Gossip
	ring     atomic.Pointer[snapshot]
	addrs    atomic.Pointer[map[string]string] // member → peer address
	epoch    atomic.Uint64
	peers    *peer.Pool
	grpc     *grpc.Server
	health   *health.Server
	peerLn   net.Listener
	started  time.Time
	draining atomic.Bool // out of the ring; still answers as a non-owner and to hand-offs
	purges   *purgeSync
	// handedOff is closed when a drain's offers have ended; handOff then
	// holds how they went.
	handedOff chan struct{}
	handOff   peer.HandOff
}

// startMesh binds the peer listener, starts gossip and the ring loop.
func (n *Node) startMesh(ctx context.Context) error {
	mc := *n.cfg.Mesh
	mc.withDefaults()
	m := &mesh{cfg: mc, peers: peer.NewPool(mc.PeerTimeout), started: time.Now(), purges: newPurgeSync(mc.PurgeLease),
		handedOff: make(chan struct{})}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", mc.PeerAddr)
	if err != nil {
		return fmt.Errorf("node: peer listener: %w", err)
	}
	m.peerLn = ln
	m.grpc = grpc.NewServer(peer.ServerOptions()...)
	peerv1.RegisterPeerServiceServer(m.grpc, peer.NewServer(n, n, n.log.With("component", "peer")))
	m.health = health.NewServer()
	healthpb.RegisterHealthServer(m.grpc, m.health)
	reflection.Register(m.grpc)
	m.health.SetServingStatus(peerv1.PeerService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	n.wg.Go(func() {
		if err := m.grpc.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			n.log.Error("peer listener failed", "err", err)
		}
	})
	g, err := gossip.New(gossip.Config{
		Name: n.cfg.Name, BindAddr: mc.GossipAddr, Join: mc.Join, Key: mc.GossipKey, Fast: mc.Fast,
		Meta: gossip.Meta{HTTPAddr: advertised(n.HTTPAddr()), PeerAddr: advertised(ln.Addr().String()), AdminAddr: n.advertisedAdmin(),
			Region: mc.Region, Version: n.cfg.Version, Started: m.started.UnixMilli()},
		Logger: n.log.With("component", "gossip"),
	})
	if err == nil {
		err = g.Start(ctx)
	}
	if err != nil {
		m.grpc.Stop()
		return fmt.Errorf("node: %w", err)
	}
	m.gossip = g
	n.mesh = m
	n.rebuildRing()
	n.registerMeshMetrics()
	n.wg.Go(func() {
		for {
			select {
			case <-n.ctx.Done():
				return
			case <-g.Changed():
				n.rebuildRing()
				m.purges.Kick() // a member that joined may know purges this node missed
			}
		}
	})
	n.wg.Go(n.purgeSyncLoop)
	return nil
}

// advertised turns a bound address into one others can dial: an unspecified
// host ("[::]:7070") becomes loopback only when nothing better is known.
func advertised(addr string) string {
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

// advertisedAdmin is the admin address others may show operators: empty
// without an admin listener.
func (n *Node) advertisedAdmin() string {
	if n.adminLn == nil {
		return ""
	}
	return advertised(n.adminLn.Addr().String())
}

// rebuildRing swaps in a ring over the current members and closes the peer
// connections of members that left.
func (n *Node) rebuildRing() {
	m := n.mesh
	members := m.gossip.Members()
	if len(members) == 0 || n.ctx.Err() != nil {
		return // shutting down
	}
	names := make([]string, 0, len(members))
	addrs := make(map[string]string, len(members))
	for _, mem := range members {
		// Draining members own nothing but still answer: the new owners of
		// their keys ask them before the origin.
		addrs[mem.Name] = mem.Meta.PeerAddr
		if !mem.Meta.Draining && (mem.Name != n.cfg.Name || !m.draining.Load()) {
			names = append(names, mem.Name)
		}
	}
	if len(names) == 0 {
		return // every member drains: keep the last ring
	}
	r, err := ring.New(names, m.cfg.Ring)
	if err != nil {
		n.log.Error("ring not rebuilt", "members", len(names), "err", err)
		return
	}
	if old := m.addrs.Load(); old != nil {
		for name, addr := range *old {
			if addrs[name] != addr {
				m.peers.Close(addr)
			}
		}
	}
	m.addrs.Store(&addrs)
	old := m.ring.Load()
	if old != nil && slices.Equal(old.ring.Members(), r.Members()) {
		return // a member's metadata changed, not the ring
	}
	now := time.Now()
	snap := &snapshot{ring: r}
	if old != nil {
		snap.past = append(snap.past, pastRing{ring: old.ring, until: now.Add(m.cfg.HandoffWindow)})
		for _, p := range old.past {
			if len(snap.past) < maxPastRings && now.Before(p.until) {
				snap.past = append(snap.past, p)
			}
		}
	}
	if m.inNewestWave(members, names) && (old == nil || !isSubset(names, old.ring.Members())) {
		// This node joined recently and sees members arrive: its keys were
		// held by the members that were there before its wave (however they
		// arrived in its view), not by the rings of its own partial views.
		// When members go, they held them.
		snap.past = m.pastWaves(members, names, now)
	}
	m.ring.Store(snap)
	n.log.Info("ring rebuilt", "members", len(names), "epoch", m.epoch.Add(1))
}

// pastWaves returns the rings of the members there before this node's join
// wave, then before each earlier wave that joined within the hand-off
// window, newest first (at most maxPastRings): a key moved at each of
// several scale-outs in a row may still be where it was before the first.
func (m *mesh) pastWaves(members []gossip.Member, names []string, now time.Time) []pastRing {
	var past []pastRing
	wave := m.started.Add(-m.cfg.JoinWave).UnixMilli() // members that started before this are older
	oldest := now.Add(-m.cfg.HandoffWindow).UnixMilli()
	for len(past) < maxPastRings {
		var before []string
		var newest int64 // the start of the newest member before wave
		for _, mem := range members {
			if s := mem.Meta.Started; s != 0 && s < wave && slices.Contains(names, mem.Name) {
				before = append(before, mem.Name)
				newest = max(newest, s)
			}
		}
		r, err := ring.New(before, m.cfg.Ring)
		if err != nil || len(before) == 0 {
			break
		}
		past = append(past, pastRing{ring: r, until: now.Add(m.cfg.HandoffWindow)})
		if newest < oldest {
			break // that wave joined before the window: it has taken its keys over
		}
		wave = newest - m.cfg.JoinWave.Milliseconds()
	}
	return past
}

// inNewestWave reports whether this node started within the hand-off window
// and no ring member (names) started a join wave after it.
func (m *mesh) inNewestWave(members []gossip.Member, names []string) bool {
	if time.Since(m.started) >= m.cfg.HandoffWindow || len(names) < 2 {
		return false
	}
	late := m.started.Add(m.cfg.JoinWave).UnixMilli()
	for _, mem := range members {
		if mem.Meta.Started > late && slices.Contains(names, mem.Name) {
			return false
		}
	}
	return true
}

// isSubset reports whether every one of names is in of.
func isSubset(names, of []string) bool {
	for _, n := range names {
		if !slices.Contains(of, n) {
			return false
		}
	}
	return true
}

// owner returns the peer that owns key and its address, or ok false when this
// node owns it (or there is no mesh).
func (n *Node) owner(key string) (name, addr string, ok bool) {
	if n.mesh == nil {
		return "", "", false
	}
	o, found := n.mesh.ring.Load().ring.Owner(key)
	if !found || o == n.cfg.Name {
		return "", "", false
	}
	a := (*n.mesh.addrs.Load())[o]
	return o, a, a != ""
}

// previousOwners returns the members that held key before the last ring
// changes, newest first, while their hand-off windows last: live members
// other than this node and the key's owner.
func (n *Node) previousOwners(key string) []peerRef {
	if n.mesh == nil {
		return nil
	}
	s := n.mesh.ring.Load()
	cur, _ := s.ring.Owner(key)
	addrs := *n.mesh.addrs.Load()
	now := time.Now()
	var out []peerRef
	for _, p := range s.past {
		o, found := p.ring.Owner(key)
		if !found || now.After(p.until) || o == n.cfg.Name || o == cur || addrs[o] == "" ||
			slices.ContainsFunc(out, func(r peerRef) bool { return r.name == o }) {
			continue
		}
		out = append(out, peerRef{name: o, addr: addrs[o]})
	}
	return out
}

// handOffSources returns the members whose caches a fill of key asks before
// the origin: offeredBy (a draining member offering it), if any, then the
// previous owners.
func (n *Node) handOffSources(key, offeredBy string) []peerRef {
	prev := n.previousOwners(key)
	if offeredBy == "" {
		return prev
	}
	addr := (*n.mesh.addrs.Load())[offeredBy]
	if addr == "" {
		return prev
	}
	out := []peerRef{{name: offeredBy, addr: addr}}
	for _, p := range prev {
		if p.name != offeredBy {
			out = append(out, p)
		}
	}
	return out
}

// peerRef names a member and its peer address.
type peerRef struct{ name, addr string }

// DrainLocal takes this node out of the ring: it stops owning keys, tells the
// others, reports not ready, and offers its hottest objects to their new
// owners. It stays a member until it stops, answering clients (as a
// non-owner) and the new owners of its keys, which take its objects over
// from it instead of the origin.
func (n *Node) DrainLocal() error {
	if n.mesh == nil {
		return errors.New("node: not in a mesh")
	}
	if n.mesh.draining.Swap(true) {
		return nil
	}
	n.ready.Store(false)
	n.log.Info("draining: leaving the ring; still answering until stopped")
	n.rebuildRing()
	// Announce in the background: the caller's answer must not wait for the
	// update to spread.
	n.wg.Go(func() {
		if err := n.mesh.gossip.Drain(n.mesh.cfg.LeaveTimeout); err != nil {
			n.log.Warn("draining: not announced", "err", err)
		}
		n.mesh.handOff = n.handOff(n.ctx)
		close(n.mesh.handedOff)
	})
	return nil
}

// HandOffDone waits until this draining node has offered its hottest
// objects to their new owners, or ctx ends, and tells how the offers went.
func (n *Node) HandOffDone(ctx context.Context) (peer.HandOff, error) {
	if n.mesh == nil || !n.mesh.draining.Load() {
		return peer.HandOff{}, errors.New("node: not draining")
	}
	select {
	case <-n.mesh.handedOff:
		return n.mesh.handOff, nil
	case <-ctx.Done():
		return peer.HandOff{}, context.Cause(ctx)
	}
}

// drainBeforeStop takes the node out of the ring and keeps it answering for
// Mesh.DrainOnStop, or until ctx ends, unless it is alone or drains already.
func (n *Node) drainBeforeStop(ctx context.Context) {
	m := n.mesh
	if m == nil || m.cfg.DrainOnStop <= 0 || m.draining.Load() || n.RingMembers() < 2 {
		return
	}
	if err := n.DrainLocal(); err != nil {
		n.log.Warn("not draining before stopping", "err", err)
		return
	}
	n.log.Info("draining before stopping", "for", m.cfg.DrainOnStop)
	t := time.NewTimer(m.cfg.DrainOnStop)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// stopMesh leaves the mesh and stops the peer listener.
func (m *mesh) leave() error {
	m.health.Shutdown()
	return m.gossip.Leave(m.cfg.LeaveTimeout)
}

func (m *mesh) stop(ctx context.Context) error {
	stop := context.AfterFunc(ctx, m.grpc.Stop)
	m.grpc.GracefulStop()
	stop()
	err := m.gossip.Shutdown()
	m.peers.CloseAll()
	return err
}

// GossipAddr is the node's gossip address; empty without a mesh.
func (n *Node) GossipAddr() string {
	if n.mesh == nil {
		return ""
	}
	return n.mesh.gossip.Addr()
}

// PeerAddr is the node's gRPC peer address; empty without a mesh.
func (n *Node) PeerAddr() string {
	if n.mesh == nil {
		return ""
	}
	return n.mesh.peerLn.Addr().String()
}

// RingMembers is the number of members of the node's current ring.
func (n *Node) RingMembers() int {
	if n.mesh == nil {
		return 1
	}
	return len(n.mesh.ring.Load().ring.Members())
}

// registerMeshMetrics exports the ring and peer traffic.
func (n *Node) registerMeshMetrics() {
	reg := n.metrics.reg
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshcdn_ring_members", Help: "Members of this node's current ring."},
			func() float64 { return float64(n.RingMembers()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshcdn_ring_owned_share", Help: "Share of the ring's partitions this node owns."},
			func() float64 { return n.mesh.ring.Load().ring.Shares()[n.cfg.Name] }),
		n.metrics.peerFetches, n.metrics.peerServed, n.metrics.peerBytes, n.metrics.handoffs, n.metrics.handedOff, n.metrics.purgesCaughtUp,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshcdn_purges_in_step",
			Help: "1 while this node's purge log is known to be in step with the cluster's; 0 while it revalidates objects older than the purge lease."},
			func() float64 {
				if n.purgesCurrent() {
					return 1
				}
				return 0
			}),
	)
}
