package lease

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/node/budget"
)

// member is a holder as the protocol wants it: it asks with the share it
// keeps, puts each grant in force at once, and starts requests only within
// its share.
type member struct {
	name     string
	share    budget.Limits
	inflight int
	waiting  int
	asked    time.Time
}

// TestBookNeverOver: members asking in any order, with any demand, and
// starting or finishing requests between asks, never have more requests in
// flight together than the budget, nor shares of rate and bandwidth over
// it; and once demand stops moving, the budget goes where it is asked for.
func TestBookNeverOver(t *testing.T) {
	const valid = 3 * time.Second
	lim := budget.Limits{Concurrency: 4, Rate: 200, Bandwidth: 50e6}
	for seed := range 200 {
		rng := rand.New(rand.NewPCG(uint64(seed), 7))
		now := time.Unix(1e9, 0)
		bk := &book{since: now.Add(-time.Hour), accounts: map[string]*account{}}
		ms := make([]*member, 2+rng.IntN(4))
		for i := range ms {
			ms[i] = &member{name: fmt.Sprintf("n%d", i)}
		}
		for step := range 400 {
			now = now.Add(time.Duration(rng.IntN(400)) * time.Millisecond)
			// Each member asks at least every second, as holders renew.
			askers := []*member{ms[rng.IntN(len(ms))]}
			for _, o := range ms {
				if now.Sub(o.asked) > time.Second {
					askers = append(askers, o)
				}
			}
			for _, m := range askers {
				m.asked = now
				// Between asks: some requests finish, some start within the share.
				m.inflight -= rng.IntN(m.inflight + 1)
				if step < 300 {
					m.waiting = rng.IntN(8)
				}
				for m.waiting > 0 && m.inflight < m.share.Concurrency {
					m.inflight++
					m.waiting--
				}
				g := bk.grant(m.name, account{budget: lim, share: m.share, inflight: m.inflight, waiting: m.waiting}, &lim, now, valid)
				m.share = g
				for m.waiting > 0 && m.inflight < m.share.Concurrency {
					m.inflight++ // at once, under the new share
					m.waiting--
				}
				var in, cap int
				var rate, bw float64
				for _, o := range ms {
					in += o.inflight
					cap += max(o.share.Concurrency, o.inflight)
					rate += o.share.Rate
					bw += o.share.Bandwidth
				}
				if in > lim.Concurrency || cap > lim.Concurrency || rate > lim.Rate+1e-9 || bw > lim.Bandwidth+1e-3 {
					t.Fatalf("seed %d step %d: %d in flight, %d within shares, rate %v, bandwidth %v: over %+v",
						seed, step, in, cap, rate, bw, lim)
				}
			}
		}
		// Demand has stopped moving: whoever still waits gets the budget.
		var busy *member
		for _, m := range ms {
			m.waiting = 0
		}
		busy = ms[0]
		busy.waiting = 10
		for range 6 { // two renewals each: a lower share is in force, then reported
			now = now.Add(100 * time.Millisecond)
			for _, m := range ms {
				m.inflight = 0
				m.share = bk.grant(m.name, account{budget: lim, share: m.share, waiting: m.waiting}, &lim, now, valid)
			}
		}
		if busy.share.Concurrency != lim.Concurrency || busy.share.Rate < lim.Rate*0.999 {
			t.Fatalf("seed %d: the only member with waiting requests gets %+v of %+v", seed, busy.share, lim)
		}
	}
}

// TestBookFlows: a member's idle share flows to one whose requests wait,
// once the idle member has put its lower share in force; a member that
// stops asking loses its share when its lease runs out.
func TestBookFlows(t *testing.T) {
	const valid = 3 * time.Second
	lim := budget.Limits{Concurrency: 4}
	now := time.Unix(1e9, 0)
	bk := &book{since: now.Add(-time.Hour), accounts: map[string]*account{}}
	ask := func(name string, share budget.Limits, inflight, waiting int) budget.Limits {
		return bk.grant(name, account{budget: lim, share: share, inflight: inflight, waiting: waiting}, &lim, now, valid)
	}
	a := ask("a", budget.Limits{}, 0, 9)
	if a.Concurrency != 4 {
		t.Fatalf("alone and waiting, a gets %d; want 4", a.Concurrency)
	}
	b := ask("b", budget.Limits{}, 0, 3)
	if b.Concurrency != 0 {
		t.Fatalf("b gets %d while a holds the budget; want 0", b.Concurrency)
	}
	now = now.Add(time.Second)
	a = ask("a", a, 4, 5) // a learns that b waits too: its share is lowered
	if a.Concurrency != 2 {
		t.Fatalf("a's share with b waiting: %d; want 2", a.Concurrency)
	}
	if b = ask("b", b, 0, 3); b.Concurrency != 0 {
		t.Fatalf("b gets %d while a still has 4 in flight; want 0", b.Concurrency)
	}
	a = ask("a", a, 2, 5) // two of a's requests ended; the lower share is in force
	if b = ask("b", b, 0, 3); b.Concurrency != 2 {
		t.Fatalf("b gets %d once a keeps 2; want 2", b.Concurrency)
	}
	now = now.Add(valid) // a stops asking (it vanished)
	if b = ask("b", b, 2, 3); b.Concurrency != 4 {
		t.Fatalf("b gets %d once a's lease ran out; want 4", b.Concurrency)
	}
}

// TestBookNewKeeper: a keeper that just took over renews the shares its
// members keep and grants nothing more for one lease time, since leases
// its predecessor granted may still run.
func TestBookNewKeeper(t *testing.T) {
	const valid = 3 * time.Second
	lim := budget.Limits{Concurrency: 8, Rate: 100}
	now := time.Unix(1e9, 0)
	bk := &book{since: now, accounts: map[string]*account{}}
	kept := budget.Limits{Concurrency: 3, Rate: 40}
	g := bk.grant("a", account{budget: lim, share: kept, waiting: 20}, &lim, now, valid)
	if g != kept {
		t.Fatalf("a new keeper grants %+v; want the share kept, %+v", g, kept)
	}
	if g = bk.grant("a", account{budget: lim, share: kept, waiting: 20}, &lim, now.Add(2*time.Second), valid); g != kept {
		t.Fatalf("a new keeper renews %+v; want the share kept, %+v", g, kept)
	}
	g = bk.grant("b", account{budget: lim, waiting: 20}, &lim, now.Add(valid-time.Millisecond), valid)
	if g != (budget.Limits{}) {
		t.Fatalf("a new keeper grants a newcomer %+v within a lease time; want nothing", g)
	}
	g = bk.grant("b", account{budget: lim, waiting: 20}, &lim, now.Add(valid), valid)
	if g.Concurrency != 4 || g.Rate != 50 {
		t.Fatalf("after a lease time, b gets %+v; want half, as it asks as much as a: 4 and 50/s", g)
	}
}

// TestBookLimits: the budget in force is, limit by limit, the lowest any
// member configured.
func TestBookLimits(t *testing.T) {
	now := time.Unix(1e9, 0)
	bk := &book{since: now.Add(-time.Hour), accounts: map[string]*account{
		"a": {budget: budget.Limits{Concurrency: 8, Rate: 100}, expires: now.Add(time.Second)},
		"b": {budget: budget.Limits{Concurrency: 4, Bandwidth: 1e6}, expires: now.Add(time.Second)},
	}}
	own := budget.Limits{Concurrency: 6, Rate: 150}
	if got, want := bk.limits(&own), (budget.Limits{Concurrency: 4, Rate: 100, Bandwidth: 1e6}); got != want {
		t.Fatalf("limits = %+v; want %+v", got, want)
	}
}
