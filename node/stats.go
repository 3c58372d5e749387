package node

import (
	peerv1 "github.com/meshcdn/meshcdn/proto/meshcdn/peer/v1"
)

// localStats is this node's counters, as the peer protocol carries them.
func (n *Node) localStats() *peerv1.StatsResponse {
	requests, bytes, origin, peer := n.pl.Totals()
	s := &peerv1.StatsResponse{Requests: requests, Bytes: bytes, OriginRequests: origin, PeerFetches: peer}
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
