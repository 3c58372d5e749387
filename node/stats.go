package node

import (
	"sync/atomic"

	"github.com/meshcdn/meshcdn/node/httpcache"
	peerv1 "github.com/meshcdn/meshcdn/proto/meshcdn/peer/v1"
)

// counters are the node's totals by cache status for the admin API
// (Prometheus has the same and more, by site). Origin requests and peer
// fetches are counted by site only (siteCounts) and summed here.
type counters struct {
	requests [len(httpcache.Labels)]atomic.Int64
	bytes    [len(httpcache.Labels)]atomic.Int64
}

// originAndPeer sums the sites' origin requests and peer fetches.
func (n *Node) originAndPeer() (origin, peer int64) {
	for _, m := range n.siteStats {
		origin += m.counts.origin.Load()
		peer += m.counts.peer.Load()
	}
	return origin + n.unknown.counts.origin.Load(), peer + n.unknown.counts.peer.Load()
}

// localStats is this node's counters, as the peer protocol carries them.
func (n *Node) localStats() *peerv1.StatsResponse {
	origin, peer := n.originAndPeer()
	s := &peerv1.StatsResponse{Requests: map[string]int64{}, Bytes: map[string]int64{},
		OriginRequests: origin, PeerFetches: peer}
	for i, l := range httpcache.Labels {
		s.Requests[l] = n.counters.requests[i].Load()
		s.Bytes[l] = n.counters.bytes[i].Load()
	}
	tier := func(name string, objects int, bytes, evictions uint64) {
		s.Tiers = append(s.Tiers, &peerv1.Tier{Name: name, Objects: int64(objects), Bytes: int64(bytes), Evictions: int64(evictions)})
	}
	st := n.store.Stats()
	tier("memory", st.Objects, st.Bytes, st.Evictions)
	if n.copies != nil {
		st := n.copies.Stats()
		tier("copies", st.Objects, st.Bytes, st.Evictions)
	}
	if n.disk != nil {
		st := n.disk.Stats()
		tier("disk", st.Objects, st.Bytes, st.Evictions)
	}
	return s
}
