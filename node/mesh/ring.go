package mesh

import (
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/meshcdn/meshcdn/gossip"
	"github.com/meshcdn/meshcdn/ring"
)

// snapshot is a ring and the rings it replaced, newest first, while their
// hand-off windows last: where keys were before.
type snapshot struct {
	ring  *ring.Ring
	past  []pastRing
	since time.Time // when this ring replaced the last one
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

// Rebuild swaps in the rings over the current members, closes the peer
// connections of members that left and opens those of members that
// joined, and reports whether the members, their
// addresses or a ring changed. A change of metadata alone (a member's load,
// advertised every few seconds) keeps the rings and their history and
// builds nothing. The ring loop calls it on every gossip change.
func (m *Mesh) Rebuild() bool {
	members := m.gossip.Members()
	if len(members) == 0 || m.ctx.Err() != nil {
		return false // shutting down
	}
	names, addrs, byRegion := m.ringMembers(members)
	changed := false
	if old := m.addrs.Load(); old == nil || !maps.Equal(*old, addrs) {
		var before map[string]string
		if old != nil {
			before = *old
		}
		for name, addr := range before {
			if addrs[name] != addr {
				m.peers.Close(addr)
			}
		}
		for name, addr := range addrs {
			if before[name] != addr && name != m.self.Name {
				m.peers.Warm(addr)
			}
		}
		m.addrs.Store(&addrs)
		changed = true
	}
	if rr := m.regions.Load(); rr == nil || !maps.EqualFunc(rr.members, byRegion, slices.Equal) {
		m.regions.Store(newRegionRings(byRegion, m.cfg.Ring, m.log))
		changed = true
	}
	if len(names) == 0 {
		return changed // every member drains: keep the last ring
	}
	old := m.ring.Load()
	if old != nil && slices.Equal(old.ring.Members(), names) {
		return changed // a member's metadata changed, not the ring
	}
	r, err := ring.New(names, m.cfg.Ring)
	if err != nil {
		m.log.Error("ring not rebuilt", "members", len(names), "err", err)
		return changed
	}
	m.ring.Store(m.next(old, r, members, names, time.Now()))
	m.log.Info("ring rebuilt", "members", len(names), "epoch", m.epoch.Add(1))
	return true
}

// ringMembers returns the names of the members of this node's region that
// own keys, the peer address of every member, and the owners of every
// region by region. Draining members own nothing but still answer: the new
// owners of their keys ask them before the origin. Routers are in none of
// the three. With mesh TLS, a member that has not proven its name is left
// out of all three.
func (m *Mesh) ringMembers(members []gossip.Member) ([]string, map[string]string, map[string][]string) {
	names := make([]string, 0, len(members))
	addrs := make(map[string]string, len(members))
	byRegion := map[string][]string{}
	slices.SortFunc(members, func(a, b gossip.Member) int { return strings.Compare(a.Name, b.Name) })
	for _, mem := range members {
		if !m.trusted(mem.Name, mem.Meta.PeerAddr) {
			m.check(mem.Name, mem.Meta.PeerAddr) // until then it owns nothing and is asked nothing
			continue
		}
		if mem.Meta.Router {
			continue
		}
		addrs[mem.Name] = mem.Meta.PeerAddr
		if mem.Meta.Draining || (mem.Name == m.self.Name && m.draining.Load()) {
			continue
		}
		byRegion[mem.Meta.Region] = append(byRegion[mem.Meta.Region], mem.Name)
		if mem.Meta.Region == m.cfg.Region {
			names = append(names, mem.Name)
		}
	}
	return names, addrs, byRegion
}

// next is the snapshot that replaces old with r: old's ring and the rings
// before it whose windows last become the past; or, for a node of the
// newest join wave that sees members arrive, the rings from before its wave.
func (m *Mesh) next(old *snapshot, r *ring.Ring, members []gossip.Member, names []string, now time.Time) *snapshot {
	snap := &snapshot{ring: r, since: now}
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
	return snap
}

// pastWaves returns the rings of the members there before this node's join
// wave, then before each earlier wave that joined within the hand-off
// window, newest first (at most maxPastRings): a key moved at each of
// several scale-outs in a row may still be where it was before the first.
func (m *Mesh) pastWaves(members []gossip.Member, names []string, now time.Time) []pastRing {
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
func (m *Mesh) inNewestWave(members []gossip.Member, names []string) bool {
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

// Ring is the current ring.
func (m *Mesh) Ring() *ring.Ring { return m.ring.Load().ring }

// SetRing replaces the current ring with r and forgets the rings before it,
// until the next membership change: for tests of nodes whose rings disagree.
func (m *Mesh) SetRing(r *ring.Ring) { m.ring.Store(&snapshot{ring: r}) }

// Epoch counts the ring changes this node has seen.
func (m *Mesh) Epoch() uint64 { return m.epoch.Load() }

// Owner returns the peer that owns key and its address, or ok false when
// this node owns it.
func (m *Mesh) Owner(key string) (name, addr string, ok bool) {
	o, found := m.ring.Load().ring.Owner(key)
	if !found || o == m.self.Name {
		return "", "", false
	}
	a := (*m.addrs.Load())[o]
	return o, a, a != ""
}

// PeerRef names a member and its peer address.
type PeerRef struct{ Name, Addr string }

// PreviousOwners returns the members that held key before the last ring
// changes, newest first, while their hand-off windows last: live members
// other than this node and the key's owner.
func (m *Mesh) PreviousOwners(key string) []PeerRef {
	s := m.ring.Load()
	cur, _ := s.ring.Owner(key)
	addrs := *m.addrs.Load()
	now := time.Now()
	var out []PeerRef
	for _, p := range s.past {
		o, found := p.ring.Owner(key)
		if !found || now.After(p.until) || o == m.self.Name || o == cur || addrs[o] == "" ||
			slices.ContainsFunc(out, func(r PeerRef) bool { return r.Name == o }) {
			continue
		}
		out = append(out, PeerRef{Name: o, Addr: addrs[o]})
	}
	return out
}

// HandOffSources returns the members whose caches a fill of key asks before
// the origin: offeredBy (a draining member offering it), if any, then the
// previous owners.
func (m *Mesh) HandOffSources(key, offeredBy string) []PeerRef {
	prev := m.PreviousOwners(key)
	if offeredBy == "" {
		return prev
	}
	addr := (*m.addrs.Load())[offeredBy]
	if addr == "" {
		return prev
	}
	out := []PeerRef{{Name: offeredBy, Addr: addr}}
	for _, p := range prev {
		if p.Name != offeredBy {
			out = append(out, p)
		}
	}
	return out
}

// Settled reports whether no ring (this region's, any other region's, the
// one over all regions) has changed for a join wave (10 s, 300 ms in the
// fast profile): nodes starting together have found each other, so one
// member alone owns each key. Work that must happen once for the mesh (an
// ACME order) waits for it.
func (m *Mesh) Settled() bool {
	s, rr := m.ring.Load(), m.regions.Load()
	return s != nil && rr != nil && time.Since(s.since) >= m.cfg.JoinWave && time.Since(rr.since) >= m.cfg.JoinWave
}

// regionRings are the rings of every region, and one over all of them.
type regionRings struct {
	members  map[string][]string // by region, sorted: what they were built of
	byRegion map[string]*ring.Ring
	all      *ring.Ring
	since    time.Time // when they were built
}

// newRegionRings builds the rings of members, by region.
func newRegionRings(members map[string][]string, cfg ring.Config, log *slog.Logger) *regionRings {
	rr := &regionRings{members: members, byRegion: map[string]*ring.Ring{}, since: time.Now()}
	var all []string
	for region, names := range members {
		all = append(all, names...)
		r, err := ring.New(names, cfg)
		if err != nil {
			log.Error("region ring not built", "region", region, "err", err)
			continue
		}
		rr.byRegion[region] = r
	}
	if r, err := ring.New(all, cfg); err == nil && len(all) > 0 {
		rr.all = r
	}
	return rr
}

// Region is this node's region ("" when none is set).
func (m *Mesh) Region() string { return m.cfg.Region }

// OwnerIn returns the member of region that owns key and its address; ok
// is false when region has no member, or this node is the owner.
func (m *Mesh) OwnerIn(region, key string) (name, addr string, ok bool) {
	rr := m.regions.Load()
	if rr == nil || rr.byRegion[region] == nil {
		return "", "", false
	}
	return m.peerOf(rr.byRegion[region], key)
}

// GlobalOwner returns the member of any region that owns key on a ring over
// all regions (for work done once for the whole mesh, such as an ACME
// order) and its address; ok is false when this node owns it.
func (m *Mesh) GlobalOwner(key string) (name, addr string, ok bool) {
	rr := m.regions.Load()
	if rr == nil || rr.all == nil {
		return "", "", false
	}
	return m.peerOf(rr.all, key)
}

// Keeper returns the member that does the work of key for the whole mesh:
// its owner on the ring over every region (as GlobalOwner), and its
// address; self is true when it is this node, or no ring has been built
// yet.
func (m *Mesh) Keeper(key string) (name, addr string, self bool) {
	rr := m.regions.Load()
	if rr == nil || rr.all == nil {
		return m.self.Name, "", true
	}
	o, found := rr.all.Owner(key)
	if !found || o == m.self.Name {
		return m.self.Name, "", true
	}
	return o, (*m.addrs.Load())[o], false
}

// peerOf returns the owner of key on r, unless it is this node.
func (m *Mesh) peerOf(r *ring.Ring, key string) (name, addr string, ok bool) {
	o, found := r.Owner(key)
	if !found || o == m.self.Name {
		return "", "", false
	}
	a := (*m.addrs.Load())[o]
	return o, a, a != ""
}

// RegionOf is the region a member advertises.
func (m *Mesh) RegionOf(name string) (string, bool) {
	for _, g := range m.gossip.Members() {
		if g.Name == name {
			return g.Meta.Region, true
		}
	}
	return "", false
}

// RegionShares is each member's share of the ring of its region.
func (m *Mesh) RegionShares() map[string]float64 {
	out := map[string]float64{}
	if rr := m.regions.Load(); rr != nil {
		for _, r := range rr.byRegion {
			maps.Copy(out, r.Shares())
		}
	}
	return out
}
