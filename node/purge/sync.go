package purge

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

// syncState keeps a mesh node's purge log in step with the others'. Every
// quarter of the lease the node reads a random member's log from its cursor
// there (anti-entropy) and applies what it missed. A node that has not
// completed such a read within the lease may have missed a purge: until it
// does, it serves only objects fetched within the lease and revalidates the
// others with the origin.
type syncState struct {
	clock time.Time // monotonic origin of the fields below

	synced   atomic.Int64  // clock offset (ns) when the last successful read began; 0: never
	failed   atomic.Int64  // clock offset (ns) of the last failed attempt; 0: none
	failures atomic.Uint64 // the mesh's failure count when the last successful read began
	// inStepOnce is set the first time the node is in step, for readiness.
	inStepOnce atomic.Bool

	mu      sync.Mutex
	running chan struct{} // closed when the round in progress ends; nil when none
	cursors map[string]cursor
	kick    chan struct{}
	ctx     context.Context // set by Start; rounds derive from it
	cancel  context.CancelFunc
	stopped bool // by Stop: no new rounds
	wg      sync.WaitGroup
}

// maxCursors bounds the cursors kept for members that are gone.
const maxCursors = 1024

// cursor is a position in another node's purge log.
type cursor struct{ incarnation, after uint64 }

func (s *syncState) init() {
	s.clock = time.Now()
	s.cursors = map[string]cursor{}
	s.kick = make(chan struct{}, 1)
}

// now is the monotonic clock offset, never 0.
func (s *syncState) now() int64 { return int64(time.Since(s.clock)) + 1 }

// markInStep records that the node has been in step once. It runs on every
// hit of an object older than the lease: a load, not a store, once set.
func (s *syncState) markInStep() {
	if !s.inStepOnce.Load() {
		s.inStepOnce.Store(true)
	}
}

// Start runs the sync loop of a node in a mesh until Stop; without a mesh
// it does nothing.
func (s *Service) Start(ctx context.Context) {
	st := &s.sync
	st.mu.Lock()
	defer st.mu.Unlock()
	if s.cfg.Mesh == nil || st.ctx != nil || st.stopped {
		return
	}
	st.ctx, st.cancel = context.WithCancel(ctx)
	st.wg.Go(s.loop)
}

// Stop ends the sync loop and any round in progress, and returns when they
// have ended. Later calls return at once.
func (s *Service) Stop() {
	st := &s.sync
	st.mu.Lock()
	st.stopped = true
	cancel := st.cancel
	st.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	st.wg.Wait()
}

// Kick asks the loop for an early round (a member joined).
func (s *Service) Kick() {
	select {
	case s.sync.kick <- struct{}{}:
	default:
	}
}

// Current reports whether the node's purge state may be trusted: a read of
// a member's log completed within the lease, or the node is alone without
// having lost anyone since its last read (a single node, or one whose peers
// all left gracefully).
func (s *Service) Current() bool {
	if s.cfg.Mesh == nil {
		return true
	}
	st := &s.sync
	if last := st.synced.Load(); last != 0 && time.Duration(st.now()-last) < s.cfg.Lease {
		st.markInStep()
		return true
	}
	if s.cfg.Mesh.Alone() && s.cfg.Mesh.Failures() == st.failures.Load() {
		st.synced.Store(st.now())
		st.markInStep()
		return true
	}
	return false
}

// Ready reports whether the node has been in step with the cluster's purges
// at least once (a restarted node that has not may hold what was purged
// while it was down).
func (s *Service) Ready() bool {
	return s.cfg.Mesh == nil || s.sync.inStepOnce.Load() || s.Current()
}

// Suspect reports whether an object fetched at fetched may have been purged
// without this node knowing: the node is out of step with the cluster and
// the object is older than the lease. The node then starts catching up, for
// the requests that follow, without holding the caller.
func (s *Service) Suspect(fetched, now time.Time) bool {
	if s.cfg.Mesh == nil || now.Sub(fetched) < s.cfg.Lease || s.Current() {
		return false
	}
	s.catchUpSoon()
	return true
}

// catchUpSoon starts reading a member's log now, for a node that is behind,
// unless a round runs or the last one failed within a quarter lease.
func (s *Service) catchUpSoon() {
	st := &s.sync
	if f := st.failed.Load(); f != 0 && time.Duration(st.now()-f) < s.cfg.Lease/4 {
		return
	}
	s.startRound()
}

// startRound starts a round unless one runs, and returns a channel closed
// when the running round ends (at once when the service is not running).
func (s *Service) startRound() <-chan struct{} {
	st := &s.sync
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.running != nil {
		return st.running
	}
	done := make(chan struct{})
	if st.ctx == nil || st.stopped {
		close(done)
		return done
	}
	st.running = done
	ctx := st.ctx
	st.wg.Go(func() {
		defer func() {
			st.mu.Lock()
			st.running = nil
			st.mu.Unlock()
			close(done)
		}()
		if err := s.round(ctx); err != nil {
			st.failed.Store(st.now())
			if ctx.Err() == nil {
				s.log.Debug("purge log not synced", "err", err)
			}
		}
	})
	return done
}

// loop runs a round every quarter lease and when kicked.
func (s *Service) loop() {
	st := &s.sync
	t := time.NewTicker(s.cfg.Lease / 4)
	defer t.Stop()
	const (
		starting = iota
		inStep
		behind
	)
	state := starting
	for {
		select {
		case <-st.ctx.Done():
			return
		case <-t.C:
		case <-st.kick:
		}
		<-s.startRound()
		switch cur := s.Current(); {
		case cur && state == behind:
			s.log.Info("purge log in step with the cluster again")
			state = inStep
		case cur:
			state = inStep
		case state == inStep:
			// Only a node that was in step warns: one starting up waits for its
			// first member quietly.
			s.log.Warn("purge log out of step with the cluster: objects older than the purge lease are revalidated until a member answers",
				"lease", s.cfg.Lease)
			state = behind
		}
	}
}

// errNoPeer reports a round with no member to read from.
var errNoPeer = errors.New("purge: no other member to sync purges with")

// round reads one random member's log from this node's cursor there and
// applies the purges it did not know.
func (s *Service) round(ctx context.Context) error {
	st := &s.sync
	start := st.now()
	failures := s.cfg.Mesh.Failures()
	peers := s.cfg.Mesh.Peers()
	var names []string
	for name, addr := range peers {
		if name != s.cfg.Self && addr != "" {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return errNoPeer
	}
	st.mu.Lock()
	if len(st.cursors) > maxCursors {
		// Bound the memory of members that came and went. A member cut off
		// for a while keeps its cursor otherwise: reading its log from the
		// start would needlessly mark stale what was fetched before it.
		for gone := range st.cursors {
			if !slices.Contains(names, gone) {
				delete(st.cursors, gone)
			}
		}
	}
	st.mu.Unlock()
	// A random member, and others in turn if it does not answer (a member
	// may be frozen while gossip still lists it): one unresponsive member
	// must not put the node out of step.
	rand.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
	var err error
	for _, name := range names[:min(len(names), syncTries)] {
		if err = s.readLog(ctx, name, peers[name]); err == nil {
			st.synced.Store(start)
			st.failures.Store(failures)
			return nil
		}
	}
	return err
}

// syncTries is how many members a round asks before it fails.
const syncTries = 3

// readLog reads name's log from this node's cursor there to its end,
// within a quarter lease (at least 250 ms, at most a second).
func (s *Service) readLog(ctx context.Context, name, addr string) error {
	st := &s.sync
	st.mu.Lock()
	cur := st.cursors[name]
	st.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, min(time.Second, max(s.cfg.Lease/4, 250*time.Millisecond)))
	defer cancel()
	for {
		more, err := s.readPage(ctx, name, addr, &cur)
		if err != nil {
			return err
		}
		st.mu.Lock()
		st.cursors[name] = cur
		st.mu.Unlock()
		if !more {
			return nil
		}
	}
}

// readPage reads the page of name's log after cur, applies what is new and
// moves cur past it.
func (s *Service) readPage(ctx context.Context, name, addr string, cur *cursor) (more bool, err error) {
	resp, err := s.cfg.Peers.SyncPurges(ctx, addr, &peerv1.SyncPurgesRequest{Incarnation: cur.incarnation, After: cur.after, From: s.cfg.Self})
	if err != nil {
		return false, err
	}
	if resp.GetIncarnation() != cur.incarnation {
		*cur = cursor{incarnation: resp.GetIncarnation()} // the member restarted
	}
	l := newLate()
	var caught uint64
	for _, r := range resp.GetRecords() {
		if s.records.Add(r.GetPurge()) {
			l.add(r.GetPurge())
			s.log.Info("purge caught up", "purge", r.GetPurge().GetId(), "from", r.GetPurge().GetFrom(), "via", name)
			caught++
		}
		cur.after = r.GetSeq()
	}
	defer s.caughtUp.Add(caught) // counted once applied, below
	if tb := resp.GetTruncatedBefore(); tb != nil {
		// The member's log no longer reaches back to this node's cursor:
		// whatever was fetched before its oldest kept record is suspect.
		l.soft.Before = tb.AsTime().Add(Skew)
		s.log.Warn("purge log truncated since the last sync: revalidating older objects", "via", name, "before", l.soft.Before)
	}
	s.applyLate(l)
	return resp.GetMore(), nil
}

// Page answers another node's read of this node's purge log.
func (s *Service) Page(req *peerv1.SyncPurgesRequest) *peerv1.SyncPurgesResponse {
	recs, more, truncated := s.records.Since(req.GetIncarnation(), req.GetAfter())
	resp := &peerv1.SyncPurgesResponse{Incarnation: s.records.Incarnation(), Records: recs, More: more}
	if !truncated.IsZero() {
		resp.TruncatedBefore = timestamppb.New(truncated)
	}
	return resp
}
