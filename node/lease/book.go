package lease

import (
	"cmp"
	"maps"
	"slices"
	"time"

	"github.com/meshcdn/meshcdn/node/budget"
)

// book is a keeper's account of one site's budget: who holds what.
type book struct {
	since    time.Time // when this member became the keeper
	accounts map[string]*account
}

// account is one member's share as the keeper knows it.
type account struct {
	budget            budget.Limits // the site's budget in the member's configuration
	share             budget.Limits // the share the member said it keeps
	granted           budget.Limits // the share last granted
	inflight, waiting int
	expires           time.Time
}

// idle reports whether every share the book granted has run out.
func (bk *book) idle(now time.Time) bool {
	for _, a := range bk.accounts {
		if now.Before(a.expires) {
			return false
		}
	}
	return true
}

// held is what the member may be using: the largest of what it was
// granted, what it says it keeps and, for concurrency, what it has in
// flight.
func (a *account) held() budget.Limits {
	return budget.Limits{
		Concurrency: max(a.granted.Concurrency, a.share.Concurrency, a.inflight),
		Rate:        max(a.granted.Rate, a.share.Rate),
		Bandwidth:   max(a.granted.Bandwidth, a.share.Bandwidth),
	}
}

func (a *account) demand() int { return a.inflight + a.waiting }

// grant records the report r of member from and returns its share for the
// next lease time: its part of the budget by demand, within what the others
// hold. own is the budget in this member's configuration, nil when it has
// none for the site.
func (bk *book) grant(from string, r account, own *budget.Limits, now time.Time, valid time.Duration) budget.Limits {
	for name, a := range bk.accounts {
		if !now.Before(a.expires) {
			delete(bk.accounts, name)
		}
	}
	a := bk.accounts[from]
	if a == nil {
		a = &account{}
		bk.accounts[from] = a
	}
	a.budget, a.share, a.inflight, a.waiting = r.budget, r.share, r.inflight, r.waiting
	lim := bk.limits(own)
	want := bk.split(lim, from, int(now.Unix()/int64(max(valid/time.Second, 1))))
	var others budget.Limits
	for name, o := range bk.accounts {
		if name != from {
			h := o.held()
			others.Concurrency += h.Concurrency
			others.Rate += h.Rate
			others.Bandwidth += h.Bandwidth
		}
	}
	g := budget.Limits{
		Concurrency: max(0, min(want.Concurrency, lim.Concurrency-others.Concurrency)),
		Rate:        max(0, min(want.Rate, lim.Rate-others.Rate)),
		Bandwidth:   max(0, min(want.Bandwidth, lim.Bandwidth-others.Bandwidth)),
	}
	if now.Before(bk.since.Add(valid)) {
		// A new keeper: leases it does not know of may still run.
		g.Concurrency = min(g.Concurrency, a.share.Concurrency)
		g.Rate = min(g.Rate, a.share.Rate)
		g.Bandwidth = min(g.Bandwidth, a.share.Bandwidth)
	}
	a.granted, a.expires = g, now.Add(valid)
	return g
}

// limits is the budget in force: of each limit, the lowest any member
// configured (a reload that reached some members only lowers it at once and
// raises it once every member has it).
func (bk *book) limits(own *budget.Limits) budget.Limits {
	var l budget.Limits
	lower := func(b budget.Limits) {
		if b.Concurrency > 0 && (l.Concurrency == 0 || b.Concurrency < l.Concurrency) {
			l.Concurrency = b.Concurrency
		}
		if b.Rate > 0 && (l.Rate == 0 || b.Rate < l.Rate) {
			l.Rate = b.Rate
		}
		if b.Bandwidth > 0 && (l.Bandwidth == 0 || b.Bandwidth < l.Bandwidth) {
			l.Bandwidth = b.Bandwidth
		}
	}
	if own != nil {
		lower(*own)
	}
	for _, a := range bk.accounts {
		lower(a.budget)
	}
	return l
}

// split returns member's part of lim by demand. Concurrency is filled up
// to each member's demand, the smallest first, in equal parts of what is
// left (max-min fairness); slots nobody asks for stay with the keeper, for
// the next member whose requests wait, at once. Rate and bandwidth go in
// proportion to demand, to nobody while there is none. Which of members
// asking alike gets a slot that does not divide evenly turns with turn (a
// new one each lease time: within one, every grant splits alike).
func (bk *book) split(lim budget.Limits, member string, turn int) budget.Limits {
	names := slices.Sorted(maps.Keys(bk.accounts))
	k := turn % len(names)
	names = append(names[k:], names[:k]...)
	slices.SortStableFunc(names, func(a, b string) int {
		return cmp.Compare(bk.accounts[a].demand(), bk.accounts[b].demand())
	})
	total := 0
	for _, n := range names {
		total += bk.accounts[n].demand()
	}
	var out budget.Limits
	left := lim.Concurrency
	for i, n := range names {
		part := min(bk.accounts[n].demand(), left/(len(names)-i))
		if n == member {
			out.Concurrency = part
		}
		left -= part
	}
	if total > 0 {
		part := float64(bk.accounts[member].demand()) / float64(total)
		out.Rate = lim.Rate * part
		out.Bandwidth = lim.Bandwidth * part
	}
	return out
}
