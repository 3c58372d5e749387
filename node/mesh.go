package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshcdn/meshcdn/node/cache"
	"github.com/meshcdn/meshcdn/node/lease"
	"github.com/meshcdn/meshcdn/node/mesh"
	"github.com/meshcdn/meshcdn/node/peer"
	"github.com/meshcdn/meshcdn/node/purge"
	"github.com/meshcdn/meshcdn/node/slice"
	peerv1 "github.com/meshcdn/meshcdn/proto/meshcdn/peer/v1"
)

// MeshConfig joins the node to a mesh of edges (see mesh.Config).
type MeshConfig = mesh.Config

// startMesh starts the mesh New built: the peer listener, gossip and the
// ring loop, then the purge sync loop.
func (n *Node) startMesh(ctx context.Context) error {
	// Origin budgets are shared over the mesh: each holds a lease of it.
	lc := lease.Config{Self: n.cfg.Name, Mesh: leaseView{n}, Logger: n.log}
	if n.cfg.Mesh.Fast {
		lc.Renew, lc.Valid = lease.FastRenew, lease.FastValid
	}
	n.leases = lease.New(lc)
	for _, b := range n.budgets {
		if b.limited() {
			n.leases.Add(b.site, b.Budget)
		}
	}
	n.mesh = mesh.New(*n.cfg.Mesh, mesh.Self{Name: n.cfg.Name, Version: n.cfg.Version, HTTPAddr: n.HTTPAddr(),
		AdminAddr: n.AdminAddr(), Handler: n, Local: peerLocal{n}, Store: ownStore{n.store},
		Changed: func() {
			n.purges.Kick()    // a member that joined may know purges this node missed
			n.leases.Changed() // budgets may have new keepers
		},
		Logger: n.log})
	n.pl.SetMesh(n.mesh)
	if err := n.mesh.Start(ctx); err != nil {
		n.pl.SetMesh(nil)
		n.mesh = nil
		return fmt.Errorf("node: %w", err)
	}
	n.registerMeshMetrics()
	n.purges.Start(n.ctx)
	n.leases.Start(n.ctx)
	return nil
}

// leaseView is the mesh as the lease service sees it.
type leaseView struct{ n *Node }

var _ lease.Mesh = leaseView{}

// Keeper: a site's budget is kept by the owner of a key of its own on the
// ring over every region.
func (v leaseView) Keeper(site string) (name, addr string, self bool) {
	return v.n.mesh.Keeper("origin-budget\x00" + site)
}

func (v leaseView) Ask(ctx context.Context, addr string, req *peerv1.LeaseRequest) (*peerv1.LeaseResponse, error) {
	return v.n.mesh.Peers().Lease(ctx, addr, req)
}

// errNoMesh answers mesh operations on a node alone.
var errNoMesh = errors.New("node: not in a mesh")

// drain takes this node out of the ring (see mesh.Mesh.Drain) and makes it
// report not ready.
func (n *Node) drain() error {
	if n.mesh == nil {
		return errNoMesh
	}
	n.ready.Store(false)
	n.mesh.Drain(true)
	return nil
}

// drainBeforeStop takes the node out of the ring and keeps it answering for
// Mesh.DrainOnStop, or until ctx ends, unless it is alone or drains already.
func (n *Node) drainBeforeStop(ctx context.Context) {
	m := n.mesh
	if m == nil || m.Config().DrainOnStop <= 0 || m.Draining() || n.RingMembers() < 2 {
		return
	}
	_ = n.drain()
	n.log.Info("draining before stopping", "for", m.Config().DrainOnStop)
	t := time.NewTimer(m.Config().DrainOnStop)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// GossipAddr is the node's gossip address; empty without a mesh.
func (n *Node) GossipAddr() string {
	if n.mesh == nil {
		return ""
	}
	return n.mesh.GossipAddr()
}

// PeerAddr is the node's gRPC peer address; empty without a mesh.
func (n *Node) PeerAddr() string {
	if n.mesh == nil {
		return ""
	}
	return n.mesh.PeerAddr()
}

// RingMembers is the number of members of the node's current ring.
func (n *Node) RingMembers() int {
	if n.mesh == nil {
		return 1
	}
	return len(n.mesh.Ring().Members())
}

// registerMeshMetrics exports the ring, peer traffic and purge sync.
func (n *Node) registerMeshMetrics() {
	m := n.mesh
	handedOff := func(result string, count func() uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meshcdn_handed_off_total",
			Help:        "Stored responses a draining node offered to their new owners, by result: taken, or failed.",
			ConstLabels: prometheus.Labels{"result": result}}, func() float64 { return float64(count()) })
	}
	n.metrics.reg.MustRegister(n.pl.MeshCollectors()...)
	n.metrics.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshcdn_ring_members", Help: "Members of the ring of this node's region: each owns keys there."},
			func() float64 { return float64(n.RingMembers()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshcdn_ring_owned_share", Help: "Share of the ring's partitions this node owns."},
			func() float64 { return m.Ring().Shares()[n.cfg.Name] }),
		handedOff("taken", func() uint64 { t, _ := m.HandedOff(); return t }),
		handedOff("failed", func() uint64 { _, f := m.HandedOff(); return f }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meshcdn_purges_caught_up_total",
			Help: "Purges this node missed when they were issued and applied later from another node's purge log."},
			func() float64 { return float64(n.purges.CaughtUp()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshcdn_purges_in_step",
			Help: "1 while this node's purge log is known to be in step with the cluster's; 0 while it revalidates objects older than the purge lease."},
			func() float64 {
				if n.purges.Current() {
					return 1
				}
				return 0
			}),
	)
}

// peerLocal is the node as the peer service sees it.
type peerLocal struct{ n *Node }

var _ peer.Local = peerLocal{}

func (l peerLocal) PurgeLocal(req *peerv1.PurgeRequest) int64    { return l.n.purges.Apply(req) }
func (l peerLocal) LocalStats() *peerv1.StatsResponse            { return l.n.localStats() }
func (l peerLocal) ACMECertificate(name string) ([]byte, []byte) { return l.n.acmeCertificate(name) }
func (l peerLocal) ACMEChallenge(token string) (string, bool)    { return l.n.acmeChallenge(token) }
func (l peerLocal) DrainLocal() error                            { return l.n.drain() }
func (l peerLocal) SyncPurges(req *peerv1.SyncPurgesRequest) *peerv1.SyncPurgesResponse {
	return l.n.purges.Page(req)
}
func (l peerLocal) AppliedPurges(ids []string) []string { return l.n.purges.Applied(ids) }
func (l peerLocal) Lease(req *peerv1.LeaseRequest) (*peerv1.LeaseResponse, error) {
	return l.n.leases.Grant(req) // set before the peer service starts
}
func (l peerLocal) HandOffDone(ctx context.Context) (peer.HandOff, error) {
	if l.n.mesh == nil {
		return peer.HandOff{}, mesh.ErrNotDraining
	}
	return l.n.mesh.HandOffDone(ctx)
}

// purgeView is the mesh as the purge service sees it; n.mesh is set once
// the mesh has started, before the service is asked anything.
type purgeView struct{ n *Node }

var (
	_ purge.Mesh  = purgeView{}
	_ purge.Peers = purgeView{}
)

func (v purgeView) Members() []purge.Member {
	var out []purge.Member
	for _, m := range v.n.mesh.Members() {
		if m.State == "untrusted" {
			continue // it cannot be reached as a member, nor act as one
		}
		out = append(out, purge.Member{Name: m.Name, PeerAddr: m.PeerAddr, Self: m.Self})
	}
	return out
}

func (v purgeView) Failed() []purge.Failure {
	var out []purge.Failure
	for _, f := range v.n.mesh.Failed() {
		out = append(out, purge.Failure{Name: f.Name, At: f.At})
	}
	return out
}

func (v purgeView) Peers() map[string]string        { return v.n.mesh.PeerAddrs() }
func (v purgeView) Failures() uint64                { return v.n.mesh.Failures() }
func (v purgeView) Alone() bool                     { return v.n.mesh.Alone() }
func (v purgeView) Owner(key string) (string, bool) { return v.n.mesh.Ring().Owner(key) }

func (v purgeView) Purge(ctx context.Context, addr string, req *peerv1.PurgeRequest) (int64, error) {
	return v.n.mesh.Peers().Purge(ctx, addr, req)
}

func (v purgeView) SyncPurges(ctx context.Context, addr string, req *peerv1.SyncPurgesRequest) (*peerv1.SyncPurgesResponse, error) {
	return v.n.mesh.Peers().SyncPurges(ctx, addr, req)
}

func (v purgeView) PurgeStatus(ctx context.Context, addr string, ids []string) ([]string, error) {
	return v.n.mesh.Peers().PurgeStatus(ctx, addr, ids)
}

// owner returns the peer that owns key and its address, or ok false when
// this node owns it (or there is no mesh).
func (n *Node) owner(key string) (name, addr string, ok bool) {
	if n.mesh == nil {
		return "", "", false
	}
	return n.mesh.Owner(key)
}

// globalOwner is owner over the members of every region: for work done once
// for the whole mesh.
func (n *Node) globalOwner(key string) (name, addr string, ok bool) {
	if n.mesh == nil {
		return "", "", false
	}
	return n.mesh.GlobalOwner(key)
}

// Reload reads again what may change while the node runs: the mesh
// certificates and the HTTPS listener's. New connections use them; a file
// that does not load leaves the certificate in use.
func (n *Node) Reload() error {
	var errs []error
	if n.mesh != nil {
		if err := n.mesh.ReloadTLS(); err != nil {
			errs = append(errs, err)
		} else {
			n.log.Info("mesh certificates reloaded")
		}
	}
	if n.https != nil {
		errs = append(errs, n.reloadCerts())
	}
	return errors.Join(errs...)
}

// advertise keeps this node's readiness and requests in flight in its
// gossip metadata, for whoever sends it users, until the node stops. The
// load is sent again when it moved by a fifth (or 2), so gossip does not
// carry every request.
func (n *Node) advertise() {
	every := time.Second
	if n.cfg.Mesh.Fast {
		every = 100 * time.Millisecond
	}
	t := time.NewTicker(every)
	defer t.Stop()
	sent, lastReady, lastLoad := false, false, 0
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		ready, load := n.notReady() == "", int(n.pl.Inflight())
		if sent && ready == lastReady && !loadMoved(lastLoad, load) {
			continue
		}
		if err := n.mesh.SetStatus(ready, load); err != nil {
			n.log.Debug("status not advertised", "err", err)
			continue
		}
		sent, lastReady, lastLoad = true, ready, load
	}
}

// loadMoved reports whether a load moved enough from was to be sent again.
func loadMoved(was, now int) bool {
	d := now - was
	if d < 0 {
		d = -d
	}
	return d >= max(2, was/5) || (now == 0) != (was == 0)
}

// ownStore is the memory tier as the mesh offers it when the node drains:
// objects and slices of objects; the compressed variants stay behind (the
// new owner makes its own).
type ownStore struct{ *cache.Memory }

func (s ownStore) Hottest(limit int) []string {
	keys := s.Memory.Hottest(limit)
	out := keys[:0]
	for _, k := range keys {
		if _, _, sliced := slice.FromKey(k); sliced || cache.BaseKey(k) == k {
			out = append(out, k)
		}
	}
	return out
}
