package router

import (
	_ "embed"
	"html/template"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meshcdn/meshcdn/internal/statuspage"
)

// decisionMinutes is how many minutes of answers the status page shows.
const decisionMinutes = 15

// decisions counts answers per region per minute, for the last
// decisionMinutes minutes.
type decisions struct {
	mu      sync.Mutex
	minutes [decisionMinutes]minuteCount
}

type minuteCount struct {
	minute int64          // Unix minute
	counts map[string]int // region served from ("" for no edge) → answers
}

func (d *decisions) add(region string, now time.Time) {
	m := now.Unix() / 60
	d.mu.Lock()
	defer d.mu.Unlock()
	b := &d.minutes[m%decisionMinutes]
	if b.minute != m || b.counts == nil {
		*b = minuteCount{minute: m, counts: map[string]int{}}
	}
	b.counts[region]++
}

// series returns the minutes, oldest first, ending with now's, and the
// answers of each region in each.
func (d *decisions) series(now time.Time) ([]time.Time, map[string][]int) {
	last := now.Unix() / 60
	times := make([]time.Time, decisionMinutes)
	out := map[string][]int{}
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := range decisionMinutes {
		m := last - decisionMinutes + 1 + int64(i)
		times[i] = time.Unix(m*60, 0).UTC()
		b := d.minutes[m%decisionMinutes]
		if b.minute != m {
			continue
		}
		for r, n := range b.counts {
			if out[r] == nil {
				out[r] = make([]int, decisionMinutes)
			}
			out[r][i] = n
		}
	}
	return times, out
}

// StatusPage is what the router's status page shows; GET /status.json
// answers it.
type StatusPage struct {
	Router  string    `json:"router"`
	Time    time.Time `json:"time"`
	Started time.Time `json:"started"`
	Domains []string  `json:"domains"`
	// Regions are the coverage zones' regions and any other region an edge
	// is in, by name.
	Regions []RegionStatus `json:"regions"`
	// Minutes are the minutes of the decision counts, oldest first.
	Minutes []time.Time `json:"minutes"`
	// NoEdgePerMinute counts the questions answered without an edge.
	NoEdgePerMinute []int `json:"no_edge_per_minute"`
}

// RegionStatus is one region as the router sees it.
type RegionStatus struct {
	Name     string   `json:"name"`
	Fallback []string `json:"fallback,omitempty"`
	// Edges are the region's edges gossip knows, healthy or not.
	Edges []EdgeStatus `json:"edges"`
	// AnswerWith names the edges a DNS answer gives this region's clients
	// now, and AnswerRegion the region they are in (a fallback when the
	// region has no healthy edge; "" when no region has one).
	AnswerWith   []string `json:"answer_with"`
	AnswerRegion string   `json:"answer_region"`
	// DecisionsPerMinute counts the answers (DNS and HTTP) that sent
	// clients to this region's edges, per minute of Minutes.
	DecisionsPerMinute []int `json:"decisions_per_minute"`
}

// EdgeStatus is one edge as the router sees it.
type EdgeStatus struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	State   string `json:"state"`
	Ready   bool   `json:"ready"`
	Load    int    `json:"load"`
	// Healthy is whether users are sent to it: alive, ready, under the load
	// limit and accepting connections.
	Healthy bool `json:"healthy"`
}

//go:embed status.html
var statusHTML string

var statusTmpl = statuspage.Parse(statusHTML, template.FuncMap{
	"counts": func(vs []int) template.HTML {
		fs := make([]float64, len(vs))
		for i, v := range vs {
			fs[i] = float64(v)
		}
		return statuspage.Spark(fs)
	},
	"sum": func(vs []int) int {
		n := 0
		for _, v := range vs {
			n += v
		}
		return n
	},
})

// Status builds the router's status page at now.
func (s *Server) Status(now time.Time) StatusPage {
	p := StatusPage{Router: s.cfg.Name, Time: now.UTC(), Started: s.started.UTC(), Domains: s.cfg.Domains}
	z := s.Locator().Zones()
	healthy := s.healthy()
	isHealthy := map[string]bool{}
	for _, e := range healthy {
		isHealthy[e.Name] = true
	}
	byRegion := map[string][]EdgeStatus{}
	for _, e := range s.src.Edges() {
		byRegion[e.Region] = append(byRegion[e.Region], EdgeStatus{Name: e.Name, Address: e.HTTPAddr, State: e.State,
			Ready: e.Ready, Load: e.Load, Healthy: isHealthy[e.Name]})
	}
	names := map[string]bool{}
	for name := range z.regions {
		names[name] = true
	}
	for name := range byRegion {
		names[name] = true
	}
	times, counts := s.decided.series(now)
	p.Minutes = times
	p.NoEdgePerMinute = counts[""]
	if p.NoEdgePerMinute == nil {
		p.NoEdgePerMinute = make([]int, decisionMinutes)
	}
	for _, name := range slices.Sorted(maps.Keys(names)) {
		if name == "" {
			continue // edges without a region are listed under the regions that fall back to them
		}
		r := RegionStatus{Name: name, Edges: byRegion[name], DecisionsPerMinute: counts[name]}
		if r.DecisionsPerMinute == nil {
			r.DecisionsPerMinute = make([]int, decisionMinutes)
		}
		if zr, ok := z.Region(name); ok {
			r.Fallback = zr.Fallback
		}
		slices.SortFunc(r.Edges, func(a, b EdgeStatus) int { return strings.Compare(a.Name, b.Name) })
		picked, from := Pick(z, healthy, name, s.cfg.Answers)
		for _, e := range picked {
			r.AnswerWith = append(r.AnswerWith, e.Name)
		}
		r.AnswerRegion = from
		p.Regions = append(p.Regions, r)
	}
	return p
}

// statusHandler serves GET /status and GET /status.json.
func (s *Server) statusHandler() http.Handler {
	return statuspage.Handler(s.cfg.StatusAccess, statusTmpl, func(*http.Request) any { return s.Status(time.Now()) })
}
