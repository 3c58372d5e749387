// Package purge removes objects from every node of a cluster and keeps the
// nodes in step about it. A Service applies purges to its node's store,
// records them in a bounded Log, fans a new purge out to every member with
// a receipt per member, and reads the other members' logs (anti-entropy) so
// a node that missed a fan-out catches up. Until it has read a member's log
// within the purge lease, a node treats objects older than the lease as
// suspect, and the node that issued a purge some member did not acknowledge
// answers only once that member's lease has run out.
//
// The package sees its node through the small interfaces it declares: Store
// (what a purge is applied to), Peers (the peer protocol's purge calls) and
// Mesh (the members).
package purge

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/meshcdn/meshcdn/node/cache"
	peerv1 "github.com/meshcdn/meshcdn/proto/meshcdn/peer/v1"
)

// Timeout bounds one member's answer to a fanned-out purge or status call.
const Timeout = 2 * time.Second

// DefaultLease is Config.Lease's default.
const DefaultLease = 2 * time.Second

// Store is the node's cache as a purge sees it: every tier at once.
type Store interface {
	// Invalidate drops everything stored under key and reports whether
	// there was anything.
	Invalidate(key string) bool
	// Purge removes what match selects or, with soft, marks it stale, and
	// returns how many variants it touched.
	Purge(match cache.Match, soft bool) int
}

// Peers are the purge calls of the peer protocol (peer.Pool has them).
type Peers interface {
	Purge(ctx context.Context, addr string, req *peerv1.PurgeRequest) (int64, error)
	SyncPurges(ctx context.Context, addr string, req *peerv1.SyncPurgesRequest) (*peerv1.SyncPurgesResponse, error)
	PurgeStatus(ctx context.Context, addr string, ids []string) ([]string, error)
}

// Member is one live member of the cluster.
type Member struct {
	Name, PeerAddr string
	Self           bool
}

// Failure is a member that went away without leaving, and when.
type Failure struct {
	Name string
	At   time.Time
}

// Mesh is what the service needs to know of the cluster. Its methods must
// be safe for concurrent use and must not block.
type Mesh interface {
	// Members lists the live members, this node included.
	Members() []Member
	// Peers maps the members of the current ring view to their peer
	// addresses, this node included.
	Peers() map[string]string
	// Failed lists the members that failed recently.
	Failed() []Failure
	// Failures counts the failures seen so far.
	Failures() uint64
	// Alone reports that this node has tried to join and knows no other
	// member.
	Alone() bool
	// Owner names the member that owns key.
	Owner(key string) (string, bool)
}

// Config configures a Service. Zero fields take their defaults.
type Config struct {
	// Self is this node's name. Required.
	Self string
	// Store is what purges are applied to. Required.
	Store Store
	// Mesh and Peers are the cluster; nil Mesh: a node alone, whose purges
	// apply locally and which is always in step.
	Mesh  Mesh
	Peers Peers
	// Lease is how long a node trusts its purge log after reading another
	// member's. Default 2s.
	Lease time.Duration
	// Logger receives the service's logs. Nil discards them.
	Logger *slog.Logger
}

// Receipt is one member's answer to a purge.
type Receipt struct {
	Node    string
	Applied bool
	Removed int64
	Error   string
	// Late is set (by CheckLate) for a member that had not applied the
	// purge when it was issued and has applied it since.
	Late bool
}

// Service applies, fans out and syncs purges for one node. Its methods are
// safe for concurrent use.
type Service struct {
	cfg     Config
	log     *slog.Logger
	records *Log

	gen      atomic.Uint64 // bumped by every purge; fills that saw it change store nothing
	caughtUp atomic.Uint64
	sync     syncState
	issued   issued
}

// New returns a service; Start runs its sync loop.
func New(cfg Config) *Service {
	if cfg.Lease == 0 {
		cfg.Lease = DefaultLease
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Service{cfg: cfg, log: cfg.Logger, records: NewLog()}
	s.sync.init()
	return s
}

// Lease is the purge lease in force.
func (s *Service) Lease() time.Duration { return s.cfg.Lease }

// Gen is the purge generation: it changes whenever a purge is applied, so a
// fill that started before can tell that what it fetched may predate it.
func (s *Service) Gen() uint64 { return s.gen.Load() }

// CaughtUp counts the purges applied late from another member's log.
func (s *Service) CaughtUp() uint64 { return s.caughtUp.Load() }

// Apply applies a purge to this node's store, unless the log shows it was
// applied already, and returns how many variants it removed or marked stale.
func (s *Service) Apply(req *peerv1.PurgeRequest) int64 {
	if !s.records.Add(req) {
		return 0
	}
	var removed int
	if !req.GetSoft() && len(req.GetKeyPrefixes()) == 0 && len(req.GetTags()) == 0 {
		s.gen.Add(1)
		for _, k := range req.GetKeys() { // the common case needs no scan
			if s.cfg.Store.Invalidate(k) {
				removed++
			}
		}
	} else {
		// Applied as it arrives: whatever is stored now predates it.
		set := NewSet()
		set.AddBound(req, Forever)
		removed = s.applySet(set, req.GetSoft())
	}
	s.log.Info("purge applied", "purge", req.GetId(), "from", req.GetFrom(), "removed", removed, "soft", req.GetSoft())
	return int64(removed)
}

// ApplyLogged applies every purge in the log again, bounded by its issue
// time, and returns what it removed: for objects that appeared in the store
// without passing the purges (a disk index completed late).
func (s *Service) ApplyLogged() int {
	l := newLate()
	for _, r := range s.records.All() {
		l.add(r.GetPurge())
	}
	return s.applyLate(l)
}

// Covers reports whether an applied purge, other than those vouched for,
// removes e stored under key although it was fetched before e arrived here
// (see Log.Covers).
func (s *Service) Covers(key string, e *cache.Entry, vouched []string) bool {
	return s.records.Covers(key, e, vouched)
}

// Predates reports whether a purge this node applied, other than those
// vouched for, was issued after e was fetched from the origin (see
// Log.Predates).
func (s *Service) Predates(key string, e *cache.Entry, vouched []string) bool {
	return s.records.Predates(key, e, vouched)
}

// Vouch returns the purges matching e under key that this node applied
// before e arrived (see Log.Vouch), for the nodes it sends e to.
func (s *Service) Vouch(key string, e *cache.Entry) []string { return s.records.Vouch(key, e) }

// Applied returns those of ids this node has applied.
func (s *Service) Applied(ids []string) []string {
	var out []string
	for _, id := range ids {
		if s.records.Has(id) {
			out = append(out, id)
		}
	}
	return out
}

func (s *Service) applyLate(l late) int {
	return s.applySet(l.hard, false) + s.applySet(l.soft, true)
}

func (s *Service) applySet(set *Set, soft bool) int {
	if set.Empty() {
		return 0
	}
	s.gen.Add(1)
	return s.cfg.Store.Purge(set.Match, soft)
}

// members lists the live members, this node alone without a mesh.
func (s *Service) members() []Member {
	if s.cfg.Mesh == nil {
		return []Member{{Name: s.cfg.Self, Self: true}}
	}
	return s.cfg.Mesh.Members()
}

// Issue applies a new purge on every member and returns its id and a
// receipt per member. The owners of the purged keys go first, so a member
// purged later cannot refill from an owner that still holds the old object.
// Members that did not acknowledge it are waited for until their lease has
// run out (or ctx ends): from the answer on they have it or revalidate.
func (s *Service) Issue(ctx context.Context, keys, prefixes, tags []string, soft bool) (string, []Receipt) {
	var id [8]byte
	_, _ = rand.Read(id[:])
	req := &peerv1.PurgeRequest{Id: hex.EncodeToString(id[:]), Keys: keys, KeyPrefixes: prefixes, Tags: tags,
		Soft: soft, From: s.cfg.Self, Issued: timestamppb.Now()}
	members := s.members()
	owners := map[string]bool{}
	if s.cfg.Mesh != nil {
		for _, k := range keys {
			if o, ok := s.cfg.Mesh.Owner(k); ok {
				owners[o] = true
			}
		}
	}
	receipts := make([]Receipt, len(members))
	apply := func(first bool) {
		var wg sync.WaitGroup
		for i, m := range members {
			if owners[m.Name] != first {
				continue
			}
			wg.Go(func() { receipts[i] = s.applyAt(ctx, m, req) })
		}
		wg.Wait()
	}
	apply(true)
	apply(false)
	if s.cfg.Mesh != nil {
		receipts = append(receipts, s.failedReceipts(catchUpNote)...)
		s.issued.put(req.GetId(), receipts)
		s.fence(ctx, receipts)
	} else {
		s.issued.put(req.GetId(), receipts)
	}
	return req.GetId(), receipts
}

// catchUpNote tells an operator what a member that missed a purge does.
const catchUpNote = "; it applies the purge from the others' logs when it is back, and revalidates until then"

func (s *Service) applyAt(ctx context.Context, m Member, req *peerv1.PurgeRequest) Receipt {
	if m.Self {
		return Receipt{Node: m.Name, Applied: true, Removed: s.Apply(req)}
	}
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	removed, err := s.cfg.Peers.Purge(ctx, m.PeerAddr, req)
	if err != nil {
		return Receipt{Node: m.Name, Error: unanswered(err) + catchUpNote}
	}
	return Receipt{Node: m.Name, Applied: true, Removed: removed}
}

// failedReceipts names the members that failed recently as not having
// applied a purge, note following the time of the failure.
func (s *Service) failedReceipts(note string) []Receipt {
	var out []Receipt
	for _, f := range s.cfg.Mesh.Failed() {
		out = append(out, Receipt{Node: f.Name, Error: "failed at " + f.At.UTC().Format(time.RFC3339) + note})
	}
	return out
}

// unanswered says why a member did not answer a purge call.
func unanswered(err error) string {
	if status.Code(err) == codes.DeadlineExceeded {
		return fmt.Sprintf("no answer within %v", Timeout)
	}
	return status.Convert(err).Message()
}

// fence returns once every member that did not acknowledge the purge has
// stopped trusting its purge log: a lease after the last acknowledgement.
func (s *Service) fence(ctx context.Context, receipts []Receipt) {
	if !slices.ContainsFunc(receipts, func(r Receipt) bool { return !r.Applied }) {
		return
	}
	t := time.NewTimer(s.cfg.Lease)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// Status asks every member whether it has applied purge id.
func (s *Service) Status(ctx context.Context, id string) []Receipt {
	members := s.members()
	receipts := make([]Receipt, len(members))
	var wg sync.WaitGroup
	for i, m := range members {
		wg.Go(func() { receipts[i] = s.statusAt(ctx, m, id) })
	}
	wg.Wait()
	if s.cfg.Mesh != nil {
		receipts = append(receipts, s.failedReceipts("")...)
	}
	return receipts
}

func (s *Service) statusAt(ctx context.Context, m Member, id string) Receipt {
	r := Receipt{Node: m.Name}
	if m.Self {
		r.Applied = s.records.Has(id)
	} else {
		ctx, cancel := context.WithTimeout(ctx, Timeout)
		defer cancel()
		got, err := s.cfg.Peers.PurgeStatus(ctx, m.PeerAddr, []string{id})
		if err != nil {
			r.Error = unanswered(err)
		}
		r.Applied = slices.Contains(got, id)
	}
	if !r.Applied && r.Error == "" {
		r.Error = "not in its purge log"
	}
	return r
}
