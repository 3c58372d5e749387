// Package lease shares the origin budget of a site among the members of a
// mesh, so that the whole mesh keeps within it.
//
// Each site's budget has one keeper, a member the mesh chooses (its key's
// owner on the ring over every region). Every member with origin requests
// under the budget holds a share, a lease the keeper grants for Valid and
// the member renews about every Renew, at once when a request of its finds
// no slot. With each renewal the member reports the share it keeps, its
// requests in flight and those waiting; the keeper splits the budget by
// that demand and grants each member its part of what the others do not
// hold; what nobody asks for stays with the keeper. Shares thus flow to
// where requests wait and back from idle members.
//
// The sum of the live shares never exceeds the budget:
//   - the keeper counts a member's share as the largest of what it granted,
//     what the member says it keeps and, for concurrency, its requests in
//     flight, until the member reports a lower share in force;
//   - a member counts its lease from when it asked, the keeper from when
//     the request arrived: the member's lease ends first;
//   - a member whose lease ran out keeps nothing; the keeper frees its
//     share once the lease ran out on its side too (a member that vanished
//     loses its share that way);
//   - a member that becomes a site's keeper (a member joined or left, or it
//     started) knows nothing of the leases its predecessor granted: for one
//     lease time it renews shares and grants nothing more.
//
// A member cut off from the keeper keeps its share only until its lease
// runs out; but a mesh split in two
// elects a keeper on each side, and each side then keeps the whole budget
// until the split heals, as a vanished member cannot be told from one cut
// off.
package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/meshcdn/meshcdn/node/budget"
	peerv1 "github.com/meshcdn/meshcdn/proto/meshcdn/peer/v1"
)

// Defaults of Config, and the timings of the mesh's loopback profile
// (tests, make run), where a round trip is short and failures are found in
// about a second.
const (
	DefaultRenew = time.Second
	DefaultValid = 3 * time.Second
	FastRenew    = 500 * time.Millisecond
	FastValid    = 1500 * time.Millisecond
)

// minGap is how soon after a round that lowered a share the next one
// reports the lower share in force; kickGap is the shortest time between
// two rounds for requests that find no slot, so that a burst of them asks
// once.
const (
	minGap  = 50 * time.Millisecond
	kickGap = 100 * time.Millisecond
)

// maxSites bounds the sites of one LeaseRequest.
const maxSites = 10000

// Mesh is what the service needs of the mesh.
type Mesh interface {
	// Keeper returns the member that keeps site's budget and its peer
	// address; self is true when it is this node.
	Keeper(site string) (name, addr string, self bool)
	// Ask sends a lease request to the member at addr.
	Ask(ctx context.Context, addr string, req *peerv1.LeaseRequest) (*peerv1.LeaseResponse, error)
}

// Config configures a Service.
type Config struct {
	Self   string // this member's name
	Mesh   Mesh
	Renew  time.Duration // how often shares are renewed; DefaultRenew when zero
	Valid  time.Duration // how long a grant holds; DefaultValid when zero
	Logger *slog.Logger
}

// Service is a member's part in the leases: it holds shares of the budgets
// added to it, and keeps the budgets the mesh makes it the keeper of.
type Service struct {
	cfg  Config
	log  *slog.Logger
	kick chan struct{}

	mu     sync.Mutex
	held   map[string]*holding // by site
	books  map[string]*book    // the budgets this member keeps, by site
	swept  time.Time           // when books nobody holds a share of were last dropped
	cancel context.CancelFunc
	done   chan struct{} // closed when the loop ends; nil before Start
}

// holding is this member's share of one site's budget.
type holding struct {
	b       *budget.Budget
	share   budget.Limits
	expires time.Time
	keeper  string
	gen     uint64      // counts the grants, so a stale expiry timer does nothing
	timer   *time.Timer // ends the share when it expires
}

// New returns a service that holds no share and keeps no budget yet.
func New(cfg Config) *Service {
	if cfg.Renew <= 0 {
		cfg.Renew = DefaultRenew
	}
	if cfg.Valid <= 0 {
		cfg.Valid = DefaultValid
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Service{cfg: cfg, log: cfg.Logger, kick: make(chan struct{}, 1),
		held: map[string]*holding{}, books: map[string]*book{}}
}

// Add puts b, site's budget on this member, under leases: from now on the
// node may use only the share the keeper grants it, nothing until then.
func (s *Service) Add(site string, b *budget.Budget) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.held[site]; old != nil && old.timer != nil {
		old.timer.Stop()
	}
	b.SetShare(budget.Limits{})
	b.OnWait(s.Kick)
	s.held[site] = &holding{b: b}
	s.Kick()
}

// Remove stops holding shares of site's budget (it has none any more).
func (s *Service) Remove(site string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if h := s.held[site]; h != nil {
		if h.timer != nil {
			h.timer.Stop()
		}
		h.b.OnWait(nil)
		delete(s.held, site)
	}
}

// Kick asks for a round of renewals now (at most every minGap).
func (s *Service) Kick() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Changed tells the service that the mesh's members changed: the budgets
// this member no longer keeps are forgotten, and every share is renewed at
// once, with the keepers as they are now.
func (s *Service) Changed() {
	s.mu.Lock()
	for site := range s.books {
		if _, _, self := s.cfg.Mesh.Keeper(site); !self {
			delete(s.books, site)
		}
	}
	s.mu.Unlock()
	s.Kick()
}

// Start starts renewing shares until Stop.
func (s *Service) Start(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done != nil {
		return
	}
	ctx, s.cancel = context.WithCancel(ctx)
	s.done = make(chan struct{})
	go s.loop(ctx, s.done)
}

// Stop stops renewing and returns once the loop has ended. The shares held
// end with it: the budgets start no more origin requests.
func (s *Service) Stop() {
	s.mu.Lock()
	cancel, done := s.cancel, s.done
	s.mu.Unlock()
	if done == nil {
		return
	}
	cancel()
	<-done
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range s.held {
		if h.timer != nil {
			h.timer.Stop()
		}
		h.gen++
		h.share, h.expires = budget.Limits{}, time.Time{}
		h.b.SetShare(h.share)
	}
}

// Keeps reports whether this member keeps site's budget, and since when:
// it grants more than it renewed only a lease time after that.
func (s *Service) Keeps(site string) (since time.Time, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if bk := s.books[site]; bk != nil {
		return bk.since, true
	}
	return time.Time{}, false
}

// Timing returns how often shares are renewed and how long a grant holds.
func (s *Service) Timing() (renew, valid time.Duration) { return s.cfg.Renew, s.cfg.Valid }

// Lease describes this member's share of a site's budget.
type Lease struct {
	Share   budget.Limits
	Expires time.Time // zero: none granted yet, or it ran out
	Keeper  string    // the member that granted it
}

// Lease returns this member's share of site's budget.
func (s *Service) Lease(site string) (Lease, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.held[site]
	if h == nil {
		return Lease{}, false
	}
	return Lease{Share: h.share, Expires: h.expires, Keeper: h.keeper}, true
}

func (s *Service) loop(ctx context.Context, done chan struct{}) {
	defer close(done)
	t := time.NewTimer(0)
	defer t.Stop()
	due := time.Now() // of the next round without a kick
	var last time.Time
	acked := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.kick:
			if soonest := last.Add(kickGap); time.Now().Before(soonest) {
				// Requests waiting ask at most every kickGap.
				if soonest.Before(due) {
					due = soonest
					t.Reset(time.Until(due))
				}
				continue
			}
		}
		last = time.Now()
		lowered := s.round(ctx)
		// The keeper counts a share it lowered as it was until told the
		// lower one is in force: tell it soon, once.
		next := s.cfg.Renew
		if lowered && !acked {
			next = minGap
		}
		acked = lowered && !acked
		due = time.Now().Add(next)
		t.Reset(next)
	}
}

// round renews every share with its keeper, the keepers in parallel. It
// reports whether a share was lowered: the keeper learns that it is in
// force from the next round, which should come soon.
func (s *Service) round(ctx context.Context) (again bool) {
	type keeper struct {
		addr string
		self bool
		req  *peerv1.LeaseRequest
	}
	byKeeper := map[string]*keeper{}
	s.mu.Lock()
	for _, site := range slices.Sorted(maps.Keys(s.held)) {
		h := s.held[site]
		name, addr, self := s.cfg.Mesh.Keeper(site)
		k := byKeeper[name]
		if k == nil {
			k = &keeper{addr: addr, self: self, req: &peerv1.LeaseRequest{From: s.cfg.Self}}
			byKeeper[name] = k
		}
		inflight, waiting := h.b.Demand()
		k.req.Sites = append(k.req.Sites, &peerv1.LeaseAsk{Site: site, Budget: toProto(h.b.Limits()),
			Share: toProto(h.share), Inflight: int64(inflight), Waiting: int64(waiting)})
	}
	s.mu.Unlock()

	var wg sync.WaitGroup
	var mu sync.Mutex
	for name, k := range byKeeper {
		wg.Go(func() {
			asked := time.Now()
			resp, err := s.ask(ctx, k.self, k.addr, k.req)
			if err != nil {
				s.log.Debug("origin budget: no lease", "keeper", name, "err", err)
				return
			}
			lowered := s.apply(name, asked, k.req, resp)
			mu.Lock()
			again = again || lowered
			mu.Unlock()
		})
	}
	wg.Wait()
	return again
}

// ask sends req to its keeper: this member's own book, or a peer.
func (s *Service) ask(ctx context.Context, self bool, addr string, req *peerv1.LeaseRequest) (*peerv1.LeaseResponse, error) {
	if self {
		return s.Grant(req)
	}
	if addr == "" {
		return nil, errors.New("the keeper's address is not known yet")
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Renew)
	defer cancel()
	return s.cfg.Mesh.Ask(ctx, addr, req)
}

// apply puts the grants of resp, asked at asked, in force, and reports
// whether one lowered a share.
func (s *Service) apply(keeper string, asked time.Time, req *peerv1.LeaseRequest, resp *peerv1.LeaseResponse) (lowered bool) {
	grants := resp.GetGrants()
	if len(grants) != len(req.GetSites()) {
		s.log.Warn("origin budget: a keeper answered for other sites than asked", "keeper", keeper)
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, g := range grants {
		site := req.GetSites()[i].GetSite()
		h := s.held[site]
		if h == nil || g.GetSite() != site {
			continue // removed meanwhile, or a confused answer
		}
		if g.GetRefused() != "" {
			s.log.Debug("origin budget: lease refused", "site", site, "keeper", keeper, "why", g.GetRefused())
			continue
		}
		share, err := fromProto(g.GetShare())
		if err != nil {
			s.log.Warn("origin budget: a keeper granted an invalid share", "site", site, "keeper", keeper, "err", err)
			continue
		}
		expires := asked.Add(min(g.GetValid().AsDuration(), s.cfg.Valid))
		if !time.Now().Before(expires) {
			continue // it ran out on the way
		}
		lowered = lowered || below(share, h.share)
		h.gen++
		h.share, h.expires, h.keeper = share, expires, keeper
		h.b.SetShare(share)
		gen := h.gen
		if h.timer != nil {
			h.timer.Stop()
		}
		h.timer = time.AfterFunc(time.Until(expires), func() { s.expire(site, h, gen) })
	}
	return lowered
}

// expire ends h's share unless a later grant renewed it.
func (s *Service) expire(site string, h *holding, gen uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held[site] != h || h.gen != gen {
		return
	}
	h.share, h.expires = budget.Limits{}, time.Time{}
	h.b.SetShare(budget.Limits{})
	s.log.Warn("origin budget: lease ran out before it was renewed", "site", site, "keeper", h.keeper)
	s.Kick()
}

// below reports whether a is lower than b in any limit.
func below(a, b budget.Limits) bool {
	return a.Concurrency < b.Concurrency || a.Rate < b.Rate || a.Bandwidth < b.Bandwidth
}

func toProto(l budget.Limits) *peerv1.Limits {
	return &peerv1.Limits{Concurrency: int64(l.Concurrency), Rate: l.Rate, Bandwidth: l.Bandwidth}
}

// fromProto converts and checks limits from the network.
func fromProto(p *peerv1.Limits) (budget.Limits, error) {
	l := budget.Limits{Rate: p.GetRate(), Bandwidth: p.GetBandwidth()}
	c := p.GetConcurrency()
	switch {
	case c < 0 || c > math.MaxInt32:
		return l, fmt.Errorf("concurrency %d out of range", c)
	case !(l.Rate >= 0 && l.Rate < math.Inf(1)): // NaN too
		return l, fmt.Errorf("rate %v out of range", l.Rate)
	case !(l.Bandwidth >= 0 && l.Bandwidth < math.Inf(1)):
		return l, fmt.Errorf("bandwidth %v out of range", l.Bandwidth)
	}
	l.Concurrency = int(c)
	return l, nil
}

// sweep drops, once a lease time, the books in which every share ran out:
// a site nobody asks for any more (or names that were never sites) keeps
// no memory.
func (s *Service) sweep(now time.Time) {
	if now.Sub(s.swept) < s.cfg.Valid {
		return
	}
	s.swept = now
	for site, bk := range s.books {
		if bk.idle(now) {
			delete(s.books, site)
		}
	}
}

// Grant answers a lease request from member req.From: for each site this
// member keeps, the asker's share for the next lease time.
func (s *Service) Grant(req *peerv1.LeaseRequest) (*peerv1.LeaseResponse, error) {
	from := req.GetFrom()
	if from == "" {
		return nil, errors.New("lease: from is required")
	}
	if len(req.GetSites()) > maxSites {
		return nil, fmt.Errorf("lease: %d sites in one request; at most %d", len(req.GetSites()), maxSites)
	}
	type ask struct {
		site              string
		budget, share     budget.Limits
		inflight, waiting int
	}
	asks := make([]ask, len(req.GetSites()))
	for i, a := range req.GetSites() {
		b, err := fromProto(a.GetBudget())
		if err == nil {
			asks[i].share, err = fromProto(a.GetShare())
		}
		switch {
		case err != nil:
		case a.GetSite() == "":
			err = errors.New("no site named")
		case a.GetInflight() < 0 || a.GetWaiting() < 0 || a.GetInflight() > math.MaxInt32 || a.GetWaiting() > math.MaxInt32:
			err = errors.New("inflight and waiting must be counts")
		}
		if err != nil {
			return nil, fmt.Errorf("lease: sites[%d]: %w", i, err)
		}
		asks[i].site, asks[i].budget = a.GetSite(), b
		asks[i].inflight, asks[i].waiting = int(a.GetInflight()), int(a.GetWaiting())
	}
	now := time.Now()
	resp := &peerv1.LeaseResponse{Grants: make([]*peerv1.LeaseGrant, len(asks))}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweep(now)
	for i, a := range asks {
		g := &peerv1.LeaseGrant{Site: a.site}
		resp.Grants[i] = g
		keeper, _, self := s.cfg.Mesh.Keeper(a.site)
		if !self {
			delete(s.books, a.site)
			g.Refused = fmt.Sprintf("%s does not keep the origin budget of %s: %s does", s.cfg.Self, a.site, keeper)
			continue
		}
		bk := s.books[a.site]
		if bk == nil {
			bk = &book{since: now, accounts: map[string]*account{}}
			s.books[a.site] = bk
		}
		var own *budget.Limits
		if h := s.held[a.site]; h != nil {
			l := h.b.Limits()
			own = &l
		}
		share := bk.grant(from, account{budget: a.budget, share: a.share, inflight: a.inflight, waiting: a.waiting},
			own, now, s.cfg.Valid)
		g.Share, g.Valid = toProto(share), durationpb.New(s.cfg.Valid)
	}
	return resp, nil
}
