package site

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/meshcdn/meshcdn/internal/units"
	"github.com/meshcdn/meshcdn/node/budget"
)

// OriginConfig is one origin server of a site. In YAML it is either a URL alone
// or a mapping with url, weight and priority.
type OriginConfig struct {
	// URL is the origin's base URL: http or https, host name or IP, port.
	URL string `yaml:"url"`
	// Weight shares traffic among origins of one priority. Default 1.
	Weight int `yaml:"weight"`
	// Priority orders origins: those of the lowest number take all traffic while
	// any of them is up; higher numbers are backups. Default 1.
	Priority int `yaml:"priority"`
}

// UnmarshalYAML accepts "http://host:port" as well as a mapping.
func (o *OriginConfig) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		o.URL = n.Value
		return nil
	}
	type plain OriginConfig
	return n.Decode((*plain)(o))
}

// HealthConfig is an active health check, run against every origin of a site.
type HealthConfig struct {
	// Path is probed with GET; a status below 500 counts as up. Without Path
	// (or with TCP) the probe is a TCP connect.
	Path string `yaml:"path"`
	TCP  bool   `yaml:"tcp"`
	// Interval between probes of one origin. Default 5s.
	Interval units.Duration `yaml:"interval"`
	// Timeout of one probe. Default 2s.
	Timeout units.Duration `yaml:"timeout"`
	// Fails is how many failed probes in a row mark an origin down. Default 3.
	Fails int `yaml:"fails"`
	// Passes is how many good probes in a row mark it up again. Default 2.
	Passes int `yaml:"passes"`
}

// PassiveConfig ejects an origin that fails real traffic.
type PassiveConfig struct {
	// MaxFails is how many connection errors or 5xx answers in a row mark an
	// origin down. Default 3.
	MaxFails int `yaml:"max_fails"`
	// Backoff is how long it stays down before it is tried again. Default 10s.
	Backoff units.Duration `yaml:"backoff"`
}

// Origin is a compiled origin.
type Origin struct {
	URL      *url.URL
	Weight   int
	Priority int
}

// Health is a compiled health check; nil means none.
type Health struct {
	Path     string // "" for a TCP probe
	Interval time.Duration
	Timeout  time.Duration
	Fails    int
	Passes   int
}

// Origin-side defaults.
const (
	DefaultHealthInterval = 5 * time.Second
	DefaultHealthTimeout  = 2 * time.Second
	DefaultHealthFails    = 3
	DefaultHealthPasses   = 2
	DefaultMaxFails       = 3
	DefaultBackoff        = 10 * time.Second
	DefaultQueueTimeout   = time.Second
	// DefaultBudgetQueueTimeout is queue_timeout's default for a site with
	// an origin_budget, whose requests wait their turn.
	DefaultBudgetQueueTimeout = 10 * time.Second
	DefaultStaleIfError       = 24 * time.Hour
)

// OriginHost modes.
const (
	HostClient = "client" // the client's Host (default): the origin serves the CDN domain
	HostOrigin = "origin" // the origin URL's own host
)

// compileOrigins sets the site's origin pool from c: its origins, the Host
// it sends, health checks, passive ejection, limits and stale windows.
func (c Config) compileOrigins(s *Site, fail func(field, format string, a ...any)) {
	s.Origins = c.originList(fail)
	s.OriginHost = c.originHost(fail)
	s.Health = c.healthCheck(fail)
	s.MaxFails = cmp(c.Passive.MaxFails, DefaultMaxFails)
	if s.MaxFails < 0 {
		fail("passive.max_fails", "must be positive")
	}
	s.Backoff = cmp(time.Duration(c.Passive.Backoff), DefaultBackoff)
	if c.MaxOriginRequests < 0 {
		fail("max_origin_requests", "must not be negative")
	}
	s.MaxOriginRequests = c.MaxOriginRequests
	s.QueueTimeout = cmp(time.Duration(c.QueueTimeout), DefaultQueueTimeout)
	if b := c.OriginBudget; b != nil {
		s.OriginBudget = b.compile(fail)
		s.QueueTimeout = cmp(time.Duration(c.QueueTimeout), DefaultBudgetQueueTimeout)
	}
	s.StaleWhileRevalidate = time.Duration(c.StaleWhileRevalidate)
	s.StaleIfError = DefaultStaleIfError
	if c.StaleIfError != nil {
		s.StaleIfError = time.Duration(*c.StaleIfError)
	}
}

// originList returns the origins, best priority first.
func (c Config) originList(fail func(field, format string, a ...any)) []Origin {
	if len(c.Origins) == 0 {
		fail("origins", "at least one origin URL is required")
	}
	var out []Origin
	for i, oc := range c.Origins {
		field := fmt.Sprintf("origins[%d]", i)
		u, err := ParseOrigin(oc.URL)
		if err != nil {
			fail(field, "%v", err)
			continue
		}
		if slices.ContainsFunc(out, func(o Origin) bool { return o.URL.Host == u.Host && o.URL.Scheme == u.Scheme }) {
			fail(field, "%q is listed twice", oc.URL)
			continue
		}
		o := Origin{URL: u, Weight: cmp(oc.Weight, 1), Priority: cmp(oc.Priority, 1)}
		if o.Weight < 0 || o.Weight > 1000 {
			fail(field+".weight", "%d is not between 1 and 1000", oc.Weight)
		}
		if o.Priority < 0 {
			fail(field+".priority", "%d must be positive", oc.Priority)
		}
		out = append(out, o)
	}
	slices.SortStableFunc(out, func(a, b Origin) int { return a.Priority - b.Priority })
	return out
}

// originHost returns the Host mode: client, origin or a fixed name.
func (c Config) originHost(fail func(field, format string, a ...any)) string {
	switch h := strings.TrimSpace(c.OriginHost); {
	case h == "" || h == HostClient:
		return HostClient
	case h == HostOrigin:
		return HostOrigin
	case strings.ContainsAny(h, "/ ?#@"):
		fail("origin_host", "%q is not client, origin or a host name", c.OriginHost)
		return ""
	default:
		return h
	}
}

// healthCheck returns the active health check with its defaults, nil
// without one.
func (c Config) healthCheck(fail func(field, format string, a ...any)) *Health {
	hc := c.HealthCheck
	if hc == nil {
		return nil
	}
	h := &Health{Path: hc.Path, Interval: cmp(time.Duration(hc.Interval), DefaultHealthInterval),
		Timeout: cmp(time.Duration(hc.Timeout), DefaultHealthTimeout),
		Fails:   cmp(hc.Fails, DefaultHealthFails), Passes: cmp(hc.Passes, DefaultHealthPasses)}
	if hc.TCP {
		h.Path = ""
	} else if h.Path != "" && !strings.HasPrefix(h.Path, "/") {
		fail("health_check.path", "%q must start with /", hc.Path)
	}
	if h.Fails < 0 || h.Passes < 0 {
		fail("health_check", "fails and passes must be positive")
	}
	if h.Timeout > h.Interval {
		fail("health_check.timeout", "%v is longer than the interval %v", h.Timeout, h.Interval)
	}
	return h
}

// cmp returns v, or def when v is zero.
func cmp[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// BudgetConfig is a site's origin_budget: any of its limits.
type BudgetConfig struct {
	Concurrency int             `yaml:"concurrency"`
	Rate        units.Rate      `yaml:"rate"`
	Bandwidth   units.Bandwidth `yaml:"bandwidth"`
}

func (b BudgetConfig) compile(fail func(field, format string, a ...any)) *budget.Limits {
	switch {
	case b.Concurrency < 0:
		fail("origin_budget.concurrency", "must not be negative")
	case b.Concurrency == 0 && b.Rate == 0 && b.Bandwidth == 0:
		fail("origin_budget", "sets no limit: give concurrency, rate (such as 200/s) or bandwidth (such as 400Mbit)")
	}
	return &budget.Limits{Concurrency: b.Concurrency, Rate: float64(b.Rate), Bandwidth: float64(b.Bandwidth)}
}
