package node

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshcdn/meshcdn/node/budget"
	"github.com/meshcdn/meshcdn/node/site"
)

// newBudget makes the origin budget of s, with its metrics: s's
// origin_budget, or no limit (until a reload sets one).
func (n *Node) newBudget(s *site.Site) *budget.Budget {
	var lim budget.Limits
	if s.OriginBudget != nil {
		lim = *s.OriginBudget
	}
	waits := n.metrics.budgetWait.MustCurryWith(prometheus.Labels{"site": s.Name})
	b := budget.New(lim, s.QueueTimeout, func(c budget.Class, d time.Duration) {
		waits.WithLabelValues(c.String()).Observe(d.Seconds())
	})
	l := prometheus.Labels{"site": s.Name}
	share := func(limit string, of func(budget.Limits) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshcdn_origin_budget_lease",
			Help:        "This node's share of the site's origin budget, by limit (concurrency, rate per second, bandwidth in bytes per second): its lease in a mesh, else the whole budget (0: no limit).",
			ConstLabels: prometheus.Labels{"site": s.Name, "limit": limit}},
			func() float64 {
				if sh, leased := b.Share(); leased {
					return of(sh)
				}
				return of(b.Limits())
			})
	}
	n.metrics.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshcdn_origin_budget_inflight", Help: "Origin requests of the site holding a slot of its origin budget (all of them when it has none).", ConstLabels: l},
			func() float64 { return float64(b.Inflight()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshcdn_origin_budget_waiting", Help: "Origin requests waiting for a slot of the site's origin budget.", ConstLabels: l},
			func() float64 { return float64(b.Waiting()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshcdn_origin_budget_concurrency", Help: "The site's origin budget for the whole mesh: requests in flight (0: no limit).", ConstLabels: l},
			func() float64 { return float64(b.Limits().Concurrency) }),
		share("concurrency", func(x budget.Limits) float64 { return float64(x.Concurrency) }),
		share("rate", func(x budget.Limits) float64 { return x.Rate }),
		share("bandwidth", func(x budget.Limits) float64 { return x.Bandwidth }))
	n.budgets = append(n.budgets, siteBudget{s.Name, b})
	return b
}

// siteBudget is a site's origin budget.
type siteBudget struct {
	site string
	*budget.Budget
}

// limited reports whether the budget sets a limit.
func (b siteBudget) limited() bool { return b.Limits() != (budget.Limits{}) }

// ReloadBudgets puts in force the origin budgets and queue timeouts that
// cfg gives the sites this node serves, without a restart (SIGHUP): a budget
// set, changed or removed applies to the origin requests that start from
// now on; those in flight keep their slots. In a mesh the keeper of a
// budget applies the lowest any member configured, so a lower budget
// holds as soon as one member has it, and a higher one once every member
// has it. cfg must be valid as a whole; its other settings, and sites the
// node does not serve yet, wait for a restart.
func (n *Node) ReloadBudgets(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%w (the origin budgets in force stay)", err)
	}
	var errs []error
	for i, sc := range cfg.Sites {
		s, err := sc.Compile()
		if err != nil {
			return fmt.Errorf("sites[%d]: %w", i, err) // Validate compiled it already
		}
		b := n.budgetOf(s.Name)
		if b == nil {
			errs = append(errs, fmt.Errorf("site %s: not served by this node until it restarts, nor its origin budget kept", s.Name))
			continue
		}
		var lim budget.Limits
		if s.OriginBudget != nil {
			lim = *s.OriginBudget
		}
		was := b.Limits()
		b.SetQueueTimeout(s.QueueTimeout)
		if lim == was {
			continue
		}
		b.SetLimits(lim)
		n.log.Info("origin budget reloaded", "site", s.Name, "concurrency", lim.Concurrency, "rate", lim.Rate,
			"bandwidth", lim.Bandwidth, "queue_timeout", s.QueueTimeout)
		if n.leases == nil {
			continue
		}
		switch {
		case b.limited() && was == (budget.Limits{}):
			n.leases.Add(b.site, b.Budget)
		case !b.limited():
			n.leases.Remove(b.site)
		default:
			n.leases.Kick() // the keeper learns the new budget at once
		}
	}
	return errors.Join(errs...)
}

// budgetOf returns the budget of the site named name, nil for none.
func (n *Node) budgetOf(name string) *siteBudget {
	for i := range n.budgets {
		if n.budgets[i].site == name {
			return &n.budgets[i]
		}
	}
	return nil
}
