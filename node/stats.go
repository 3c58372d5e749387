package node

import (
	"context"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/meshcdn/meshcdn/node/admin"
	"github.com/meshcdn/meshcdn/node/httpcache"
	peerv1 "github.com/meshcdn/meshcdn/proto/meshcdn/peer/v1"
)

// counters are the node's totals for the admin API (Prometheus has the same
// and more, by site).
type counters struct {
	requests       [len(httpcache.Labels)]atomic.Int64
	bytes          [len(httpcache.Labels)]atomic.Int64
	originRequests atomic.Int64
	peerFetches    atomic.Int64
}

// LocalStats implements peer.Stater: this node's counters.
func (n *Node) LocalStats() *peerv1.StatsResponse {
	s := &peerv1.StatsResponse{Requests: map[string]int64{}, Bytes: map[string]int64{},
		OriginRequests: n.counters.originRequests.Load(), PeerFetches: n.counters.peerFetches.Load()}
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

// clusterStats gathers every member's counters.
func (n *Node) clusterStats(ctx context.Context) []admin.NodeStats {
	members := adminView{n}.Members()
	out := make([]admin.NodeStats, len(members))
	var wg sync.WaitGroup
	for i, m := range members {
		wg.Go(func() {
			out[i].Node = m.Name
			if m.Self {
				out[i].Stats = n.LocalStats()
				return
			}
			ctx, cancel := context.WithTimeout(ctx, purgeTimeout)
			defer cancel()
			s, err := n.mesh.peers.Stats(ctx, m.PeerAddr)
			if err != nil {
				out[i].Error = err.Error()
				return
			}
			out[i].Stats = s
		})
	}
	wg.Wait()
	slices.SortFunc(out, func(a, b admin.NodeStats) int { return strings.Compare(a.Node, b.Node) })
	return out
}
