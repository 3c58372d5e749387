package node

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	peerv1 "github.com/meshcdn/meshcdn/proto/meshcdn/peer/v1"
)

// purgeSync keeps a mesh node's purge log in step with the others'. Every
// quarter of the lease the node reads a random member's log from its cursor
// there (anti-entropy) and applies what it missed. A node that has not
// completed such a read within the lease may have missed a purge: until it
// does, it serves only objects fetched within the lease and revalidates the
// others with the origin. The node issuing a purge that some member did not
// acknowledge answers only once that member's lease has run out, so from the
// answer on, the member either has the purge or revalidates.
type purgeSync struct {
	lease time.Duration
	clock time.Time // monotonic origin of the fields below

	synced   atomic.Int64  // clock offset (ns) when the last successful read began; 0: never
	failed   atomic.Int64  // clock offset (ns) of the last failed attempt; 0: none
	failures atomic.Uint64 // gossip's failure count when the last successful read began
	// inStepOnce is set the first time the node is in step, for readiness.
	inStepOnce atomic.Bool

	mu      sync.Mutex
	running chan struct{} // closed when the attempt in progress ends; nil when none
	cursors map[string]cursor
	kick    chan struct{}
}

// maxCursors bounds the cursors kept for members that are gone.
const maxCursors = 1024

// cursor is a position in another node's purge log.
type cursor struct{ incarnation, after uint64 }

func newPurgeSync(lease time.Duration) *purgeSync {
	return &purgeSync{lease: lease, clock: time.Now(), cursors: map[string]cursor{}, kick: make(chan struct{}, 1)}
}

// now is the monotonic clock offset, never 0.
func (s *purgeSync) now() int64 { return int64(time.Since(s.clock)) + 1 }

// Kick asks the loop for an early round (a member joined).
func (s *purgeSync) Kick() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// purgesCurrent reports whether the node's purge state may be trusted: a read of a
// member's log completed within the lease, or the node is alone without
// having lost anyone since its last read (a single node, or one whose peers
// all left gracefully).
func (n *Node) purgesCurrent() bool {
	m := n.mesh
	if m == nil {
		return true
	}
	s := m.purges
	if last := s.synced.Load(); last != 0 && time.Duration(s.now()-last) < s.lease {
		s.markInStep()
		return true
	}
	g := m.gossip
	if g.JoinTried() && len(*m.addrs.Load()) <= 1 && len(g.Members()) <= 1 && g.Failures() == s.failures.Load() {
		s.synced.Store(s.now())
		s.markInStep()
		return true
	}
	return false
}

// catchUpSoon starts reading a member's log now, for a node that is behind,
// unless a round runs or the last one failed within a quarter lease.
func (n *Node) catchUpSoon() {
	s := n.mesh.purges
	if f := s.failed.Load(); f != 0 && time.Duration(s.now()-f) < s.lease/4 {
		return
	}
	n.startPurgeSync()
}

// startPurgeSync starts a round unless one runs, and returns a channel closed
// when the running round ends.
func (n *Node) startPurgeSync() <-chan struct{} {
	s := n.mesh.purges
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running != nil {
		return s.running
	}
	done := make(chan struct{})
	s.running = done
	n.wg.Go(func() {
		defer func() {
			s.mu.Lock()
			s.running = nil
			s.mu.Unlock()
			close(done)
		}()
		if err := n.syncPurges(n.ctx); err != nil {
			s.failed.Store(s.now())
			if n.ctx.Err() == nil {
				n.log.Debug("purge log not synced", "err", err)
			}
		}
	})
	return done
}

// purgeSyncLoop runs a round every quarter lease and when kicked.
func (n *Node) purgeSyncLoop() {
	s := n.mesh.purges
	t := time.NewTicker(s.lease / 4)
	defer t.Stop()
	const (
		starting = iota
		inStep
		behind
	)
	state := starting
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		case <-s.kick:
		}
		<-n.startPurgeSync()
		switch cur := n.purgesCurrent(); {
		case cur && state == behind:
			n.log.Info("purge log in step with the cluster again")
			state = inStep
		case cur:
			state = inStep
		case state == inStep:
			// Only a node that was in step warns: one starting up waits for its
			// first member quietly.
			n.log.Warn("purge log out of step with the cluster: objects older than the purge lease are revalidated until a member answers",
				"lease", s.lease)
			state = behind
		}
	}
}

// errNoPeer reports a round with no member to read from.
var errNoPeer = errors.New("node: no other member to sync purges with")

// syncPurges reads one random member's log from this node's cursor there
// and applies the purges it did not know.
func (n *Node) syncPurges(ctx context.Context) error {
	m := n.mesh
	s := m.purges
	start := s.now()
	failures := m.gossip.Failures()
	var names []string
	for name, addr := range *m.addrs.Load() {
		if name != n.cfg.Name && addr != "" {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return errNoPeer
	}
	name := names[rand.IntN(len(names))]
	addr := (*m.addrs.Load())[name]
	s.mu.Lock()
	if len(s.cursors) > maxCursors {
		// Bound the memory of members that came and went. A member cut off
		// for a while keeps its cursor otherwise: reading its log from the
		// start would needlessly mark stale what was fetched before it.
		for gone := range s.cursors {
			if !slices.Contains(names, gone) {
				delete(s.cursors, gone)
			}
		}
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, min(time.Second, s.lease/2))
	defer cancel()
	s.mu.Lock()
	cur := s.cursors[name]
	s.mu.Unlock()
	for {
		resp, err := m.peers.SyncPurges(ctx, addr, &peerv1.SyncPurgesRequest{Incarnation: cur.incarnation, After: cur.after, From: n.cfg.Name})
		if err != nil {
			return err
		}
		if resp.GetIncarnation() != cur.incarnation {
			cur = cursor{incarnation: resp.GetIncarnation()} // the member restarted
		}
		late := newLatePurges()
		for _, r := range resp.GetRecords() {
			if n.purgeLog.add(r.GetPurge()) {
				late.add(r.GetPurge())
				n.log.Info("purge caught up", "purge", r.GetPurge().GetId(), "from", r.GetPurge().GetFrom(), "via", name)
				n.metrics.purgesCaughtUp.Inc()
			}
			cur.after = r.GetSeq()
		}
		if tb := resp.GetTruncatedBefore(); tb != nil {
			// The member's log no longer reaches back to this node's cursor:
			// whatever was fetched before its oldest kept record is suspect.
			late.soft.before = tb.AsTime().Add(purgeSkew)
			n.log.Warn("purge log truncated since the last sync: revalidating older objects", "via", name, "before", late.soft.before)
		}
		n.applyLate(late)
		s.mu.Lock()
		s.cursors[name] = cur
		s.mu.Unlock()
		if !resp.GetMore() {
			break
		}
	}
	s.synced.Store(start)
	s.failures.Store(failures)
	return nil
}

// markInStep records that the node has been in step once. It runs on every
// hit of an object older than the lease: a load, not a store, once set.
func (s *purgeSync) markInStep() {
	if !s.inStepOnce.Load() {
		s.inStepOnce.Store(true)
	}
}

// SyncPurges answers another node's read of this node's purge log.
func (n *Node) SyncPurges(req *peerv1.SyncPurgesRequest) *peerv1.SyncPurgesResponse {
	recs, more, truncated := n.purgeLog.since(req.GetIncarnation(), req.GetAfter())
	resp := &peerv1.SyncPurgesResponse{Incarnation: n.purgeLog.incarnation, Records: recs, More: more}
	if !truncated.IsZero() {
		resp.TruncatedBefore = timestamppb.New(truncated)
	}
	return resp
}

// latePurges gathers purges learnt late, hard and soft apart.
type latePurges struct{ hard, soft *timedPurge }

func newLatePurges() latePurges { return latePurges{hard: newTimedPurge(), soft: newTimedPurge()} }

func (l latePurges) add(p *peerv1.PurgeRequest) {
	if p.GetSoft() {
		l.soft.add(p)
	} else {
		l.hard.add(p)
	}
}

// applyLate applies l to every tier and returns what it removed or marked
// stale.
func (n *Node) applyLate(l latePurges) int {
	return n.applyTimed(l.hard, false) + n.applyTimed(l.soft, true)
}

// applyTimed applies a set of purges to every tier: it removes what they
// match or, with soft, marks it stale.
func (n *Node) applyTimed(set *timedPurge, soft bool) int {
	if set.empty() {
		return 0
	}
	n.purgeGen.Add(1)
	removed := n.store.Purge(set.match, soft)
	if n.copies != nil {
		removed += n.copies.Purge(set.match, soft)
	}
	if n.disk != nil {
		removed += n.disk.Purge(set.match, soft)
	}
	return removed
}
