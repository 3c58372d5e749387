package lease

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meshcdn/meshcdn/node/budget"
	peerv1 "github.com/meshcdn/meshcdn/proto/meshcdn/peer/v1"
)

// direct is a mesh of services in one process: every site's keeper is
// keeper, reached by calling its Grant (the node's tests go over gRPC).
type direct struct {
	self, keeper string
	services     map[string]*Service
	down         *atomic.Bool // the keeper cannot be reached
}

func (d direct) Keeper(string) (string, string, bool) { return d.keeper, d.keeper, d.self == d.keeper }

func (d direct) Ask(_ context.Context, addr string, req *peerv1.LeaseRequest) (*peerv1.LeaseResponse, error) {
	if d.down.Load() {
		return nil, errors.New("unreachable")
	}
	return d.services[addr].Grant(req)
}

// TestGrantChecks: a malformed lease request is refused with what is wrong
// and changes no share; a site this member does not keep is refused by
// name.
func TestGrantChecks(t *testing.T) {
	s := New(Config{Self: "k", Mesh: direct{self: "k", keeper: "k"}})
	ask := func(a *peerv1.LeaseAsk) *peerv1.LeaseRequest {
		return &peerv1.LeaseRequest{From: "n1", Sites: []*peerv1.LeaseAsk{a}}
	}
	lim := &peerv1.Limits{Concurrency: 4}
	for _, c := range []struct {
		req  *peerv1.LeaseRequest
		want string
	}{
		{&peerv1.LeaseRequest{Sites: []*peerv1.LeaseAsk{{Site: "a", Budget: lim}}}, "from is required"},
		{ask(&peerv1.LeaseAsk{Budget: lim}), "sites[0]: no site named"},
		{ask(&peerv1.LeaseAsk{Site: "a", Budget: &peerv1.Limits{Concurrency: -1}}), "sites[0]: concurrency -1 out of range"},
		{ask(&peerv1.LeaseAsk{Site: "a", Budget: lim, Share: &peerv1.Limits{Rate: math.NaN()}}), "sites[0]: rate NaN out of range"},
		{ask(&peerv1.LeaseAsk{Site: "a", Budget: &peerv1.Limits{Bandwidth: math.Inf(1)}}), "sites[0]: bandwidth +Inf out of range"},
		{ask(&peerv1.LeaseAsk{Site: "a", Budget: lim, Waiting: -3}), "sites[0]: inflight and waiting must be counts"},
		{&peerv1.LeaseRequest{From: "n1", Sites: make([]*peerv1.LeaseAsk, maxSites+1)}, "10001 sites in one request"},
	} {
		if _, err := s.Grant(c.req); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v; want %q", c.req, err, c.want)
		}
	}
	if len(s.books) != 0 {
		t.Errorf("malformed requests opened books: %v", s.books)
	}
	other := New(Config{Self: "n2", Mesh: direct{self: "n2", keeper: "k"}})
	resp, err := other.Grant(ask(&peerv1.LeaseAsk{Site: "a", Budget: lim, Waiting: 2}))
	if err != nil || len(resp.GetGrants()) != 1 || resp.GetGrants()[0].GetRefused() != "n2 does not keep the origin budget of a: k does" {
		t.Errorf("a site kept elsewhere: %v %v", resp, err)
	}
}

// TestLeaseRunsOut: a member whose request waits gets a share from the
// keeper once the keeper's first lease time has passed, renews it, and once
// it cannot reach the keeper, keeps it no longer than a lease time from its
// last ask: then it starts no origin request.
func TestLeaseRunsOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		down := new(atomic.Bool)
		services := map[string]*Service{}
		keeper := New(Config{Self: "k", Mesh: direct{self: "k", keeper: "k", services: services, down: down}})
		member := New(Config{Self: "n1", Mesh: direct{self: "n1", keeper: "k", services: services, down: down}})
		services["k"] = keeper
		b := budget.New(budget.Limits{Concurrency: 4}, time.Minute, nil)
		defer b.Close()
		member.Add("a", b)
		start := time.Now()
		keeper.Start(t.Context())
		member.Start(t.Context())
		defer keeper.Stop()
		defer member.Stop()
		release, err := b.Acquire(t.Context(), budget.Client) // a share of 1: the demand
		if err != nil {
			t.Fatal(err)
		}
		defer release()
		if d := time.Since(start); d < DefaultValid {
			t.Errorf("a new keeper granted a share after %v, within its first lease time", d)
		}
		if l, _ := member.Lease("a"); l.Keeper != "k" || l.Share.Concurrency != 1 {
			t.Errorf("Lease = %+v; want 1, the demand, from k", l)
		}
		// Renewed while the keeper answers.
		time.Sleep(3 * DefaultValid)
		if shareOf(b) != 1 {
			t.Fatalf("share %d after three lease times; want 1 still", shareOf(b))
		}
		down.Store(true)
		cut := time.Now()
		synctest.Wait() // a renewal under way has been applied
		l, _ := member.Lease("a")
		if d := l.Expires.Sub(cut); d > DefaultValid {
			t.Errorf("the lease runs %v past the keeper's reach, more than a lease time", d)
		}
		time.Sleep(time.Until(l.Expires))
		synctest.Wait()
		if shareOf(b) != 0 {
			t.Errorf("the share outlived its lease (to %v)", l.Expires)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		if _, err := b.Acquire(ctx, budget.Client); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("an origin request without a lease: %v; want it to wait", err)
		}
	})
}

func shareOf(b *budget.Budget) int {
	s, _ := b.Share()
	return s.Concurrency
}

// TestBooksSwept: the books of sites whose shares all ran out are dropped,
// so names a member asked for once keep no memory.
func TestBooksSwept(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := New(Config{Self: "k", Mesh: direct{self: "k", keeper: "k"}})
		for i := range 100 {
			req := &peerv1.LeaseRequest{From: "n1", Sites: []*peerv1.LeaseAsk{{Site: fmt.Sprint("site-", i), Budget: &peerv1.Limits{Concurrency: 1}}}}
			if _, err := s.Grant(req); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(DefaultValid)
		req := &peerv1.LeaseRequest{From: "n1", Sites: []*peerv1.LeaseAsk{{Site: "live", Budget: &peerv1.Limits{Concurrency: 1}}}}
		if _, err := s.Grant(req); err != nil {
			t.Fatal(err)
		}
		if len(s.books) != 1 {
			t.Errorf("%d books after the others' shares ran out; want 1", len(s.books))
		}
	})
}
