// Package site binds CDN domains to their origins and decides, per request, what
// is static (cached), what is dynamic (bypassed) and under which key an object is
// stored.
package site

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/meshcdn/meshcdn/internal/units"
	"github.com/meshcdn/meshcdn/node/access"
	"github.com/meshcdn/meshcdn/node/budget"
	"github.com/meshcdn/meshcdn/node/compress"
	"github.com/meshcdn/meshcdn/node/httpcache"
	"github.com/meshcdn/meshcdn/node/slice"
)

// Config is one site as written in the YAML configuration.
type Config struct {
	// Name labels the site in metrics and logs. Default: its first host.
	Name string `yaml:"name"`
	// Hosts are the CDN domain names the site answers for; "*.example.com"
	// matches any subdomain.
	Hosts []string `yaml:"hosts"`
	// Origins are the site's origin servers.
	Origins []OriginConfig `yaml:"origins"`
	// OriginHost is the Host sent to origins: "client" (default), "origin" (the
	// origin URL's host) or a literal host name. SNI follows it for https.
	OriginHost string `yaml:"origin_host"`
	// HealthCheck, when set, probes every origin actively.
	HealthCheck *HealthConfig `yaml:"health_check"`
	// Passive ejects origins that fail real requests.
	Passive PassiveConfig `yaml:"passive"`
	// MaxOriginRequests limits concurrent requests to the site's origins
	// (origin protection); 0 means no limit. Requests over it wait up to
	// QueueTimeout (default 1s), then get stale content or 503.
	MaxOriginRequests int            `yaml:"max_origin_requests"`
	QueueTimeout      units.Duration `yaml:"queue_timeout"`
	// OriginBudget, when set, bounds the site's origin requests: in
	// flight, started a second, bytes received a second. Requests over it
	// wait in order for up to QueueTimeout (then default 10s).
	OriginBudget *BudgetConfig `yaml:"origin_budget"`
	// StaleWhileRevalidate serves a stale entry at once while one background
	// fill refreshes it, when the origin's Cache-Control gives no
	// stale-while-revalidate. Default 0.
	StaleWhileRevalidate units.Duration `yaml:"stale_while_revalidate"`
	// StaleIfError serves a stale entry when the origin fails (unreachable,
	// timeout, 5xx), when the origin gives no stale-if-error. Default 1d; 0
	// turns it off.
	StaleIfError *units.Duration `yaml:"stale_if_error"`
	// CacheKey says how the query string enters the cache key.
	CacheKey KeyConfig `yaml:"cache_key"`
	// Rules are matched in order; the first match decides.
	Rules []RuleConfig `yaml:"rules"`
	// DefaultRules appends the built-in static-extension rule after Rules.
	// Default true.
	DefaultRules *bool `yaml:"default_rules"`
	// MergeSlashes merges runs of slashes in request paths ("//dyn//x" is
	// "/dyn/x") before rules, keys and the origin see them, as dot segments
	// always are. Default true.
	MergeSlashes *bool `yaml:"merge_slashes"`

	// Certificates are the site's certificates for the HTTPS listener, chosen
	// by the client's server name (SNI); several may cover one name (an
	// ECDSA and an RSA one, say).
	Certificates []CertificateConfig `yaml:"certificates"`
	// HTTPS says what a request over cleartext HTTP gets: "allow" (default:
	// served), "redirect" (308 to https) or "only" (403).
	HTTPS string `yaml:"https"`
	// HSTS, when set, adds Strict-Transport-Security to HTTPS answers.
	HSTS *HSTSConfig `yaml:"hsts"`
	// OriginProtocol overrides the scheme of the origin URLs: "http",
	// "https" or "follow" (the one the client used). Default: each URL's own.
	OriginProtocol string `yaml:"origin_protocol"`
	// ShieldRegion overrides mesh.shield_region for the site; "none" asks
	// the origin from every region.
	ShieldRegion string `yaml:"shield_region"`
	// ACME obtains a certificate for the site's hosts from the node's ACME
	// certificate authority (node.acme), one order for the whole mesh.
	ACME bool `yaml:"acme"`

	// Access is the site's access control: url_auth, referer, ip,
	// user_agent and rate_limit, decided before any cache or origin work.
	Access access.Config `yaml:",inline"`
	// Compression, when set, makes the edge compress text the origin sends
	// uncompressed (gzip and Brotli by default) and keep the encodings.
	Compression *compress.Config `yaml:"compression"`
	// Heuristic is the freshness of responses that neither a rule's ttl
	// nor the origin gives one: {factor, max} (default 0.1 of the time
	// since Last-Modified, at most 1d), or off.
	Heuristic *HeuristicConfig `yaml:"heuristic"`
	// ForwardHeaders names re-routing fields (see ReroutingFields) that
	// the site's origin needs and that the edge forwards all the same; by
	// default every one of them is dropped from origin and peer requests.
	ForwardHeaders []string `yaml:"forward_headers"`
	// SliceSize, when set (64KiB to 256MiB), stores an object longer than
	// one slice as slices of this size, each fetched from the origin with
	// a Range request of its own and cached under a key of its own, owned
	// by that key's owner in the ring: one file's slices spread over the
	// mesh, and a Range request costs the slices it covers. Absent: off.
	SliceSize units.Size `yaml:"slice_size"`
}

// KeyConfig is the query-string part of the cache key.
type KeyConfig struct {
	// Query is "all" (default: every parameter), "ignore" (none), "include"
	// (only Params) or "exclude" (all but Params). Kept parameters are sorted by
	// name, so ?a=1&b=2 and ?b=2&a=1 share an entry.
	Query  string   `yaml:"query"`
	Params []string `yaml:"params"`
}

// RuleConfig is one rule. At least one of PathPrefix, Extensions and Regex is
// set; a request matches when every one that is set matches its path.
type RuleConfig struct {
	PathPrefix string   `yaml:"path_prefix"`
	Extensions []string `yaml:"extensions"`
	Regex      string   `yaml:"regex"`
	// Action is "cache" (static: stored, with heuristic freshness when the origin
	// is silent, at least 10s also without Last-Modified) or "bypass" (dynamic: straight to the origin, never stored, never
	// coalesced).
	Action string `yaml:"action"`
	// TTL overrides the origin's freshness for "cache" rules. The origin's
	// no-store, private, no-cache and max-age=0 still win.
	TTL units.Duration `yaml:"ttl"`
	// FollowOrigin makes the origin's Cache-Control/Expires win over TTL; TTL then
	// applies only when the origin gives no freshness.
	FollowOrigin bool `yaml:"follow_origin"`
	// CheckContentType, for "cache" rules, stores a response without the
	// origin's own freshness only when its Content-Type fits the path's
	// extension (no HTML page behind /account/x.css). Default true.
	CheckContentType *bool `yaml:"check_content_type"`
	// IgnoreCookie, for "cache" rules, stores responses to requests with a
	// Cookie even when the origin gives no explicit permission (public or
	// a freshness of its own). Default false.
	IgnoreCookie bool `yaml:"ignore_cookie"`
}

// Action is what a rule does with a request.
type Action int

// Actions.
const (
	// ActionOrigin caches by the origin's headers, and the site's heuristic
	// freshness for a response with Last-Modified: the default for anything
	// no rule matches.
	ActionOrigin Action = iota
	// ActionCache treats the request as static.
	ActionCache
	// ActionBypass treats the request as dynamic.
	ActionBypass
)

func (a Action) String() string {
	switch a {
	case ActionCache:
		return "cache"
	case ActionBypass:
		return "bypass"
	default:
		return "origin"
	}
}

// Rule is a compiled rule.
type Rule struct {
	// Name describes the rule for logs, e.g. "rules[2]" or "default-static".
	Name   string
	Action Action
	Policy httpcache.Policy

	prefix string
	exts   []string
	re     *regexp.Regexp
}

func (r *Rule) matches(p string) bool {
	if r.prefix != "" && !strings.HasPrefix(p, r.prefix) {
		return false
	}
	if r.exts != nil && !slices.Contains(r.exts, strings.ToLower(strings.TrimPrefix(path.Ext(p), "."))) {
		return false
	}
	return r.re == nil || r.re.MatchString(p)
}

// StaticExtensions are the extensions the built-in rule caches.
var StaticExtensions = []string{
	"js", "mjs", "css", "map", "wasm",
	"png", "jpg", "jpeg", "gif", "webp", "avif", "svg", "ico", "bmp", "tif", "tiff",
	"woff", "woff2", "ttf", "otf", "eot",
	"mp3", "wav", "ogg", "oga", "flac", "aac", "m4a", "opus",
	"mp4", "m4v", "webm", "ogv", "mov", "mkv", "avi", "flv",
	"pdf", "zip", "gz", "tgz", "bz2", "xz", "zst", "7z", "rar", "tar",
}

// The built-in rules; each site has copies with its heuristic freshness.
var (
	defaultStatic = Rule{Name: "default-static", Action: ActionCache,
		Policy: httpcache.Policy{CheckType: true}, exts: StaticExtensions}
	fallbackRule = Rule{Name: "default-origin", Action: ActionOrigin}
)

// Site is a compiled site. It is immutable.
type Site struct {
	Name    string
	Hosts   []string
	Origins []Origin // by priority

	OriginHost           string  // HostClient, HostOrigin or a literal host
	Health               *Health // nil: no active checks
	MaxFails             int
	Backoff              time.Duration
	MaxOriginRequests    int
	QueueTimeout         time.Duration
	OriginBudget         *budget.Limits // nil: none
	StaleWhileRevalidate time.Duration
	StaleIfError         time.Duration
	MergeSlashes         bool
	Certificates         []CertificateConfig
	HTTPS                HTTPSPolicy
	HSTS                 string // the Strict-Transport-Security value; "" for none
	OriginProtocol       OriginProtocol
	ACME                 bool
	ShieldRegion         string           // "" follows the mesh's; "none" for none
	Access               *access.Policy   // nil: every request may be served
	Compression          *compress.Policy // nil: the edge compresses nothing
	SliceSize            int64            // 0: objects are stored whole

	query   string
	params  []string
	rules   []*Rule
	forward []string // the re-routing fields forwarded to origins all the same
}

// Rules counts the site's rules, the built-in ones (default-static,
// default-origin) included.
func (s *Site) Rules() int { return len(s.rules) }

// Compile validates c and builds the site. Errors name the field, relative to
// the site (e.g. "rules[2].regex: ...").
func (c Config) Compile() (*Site, error) {
	var errs []error
	fail := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, a...)))
	}
	s := &Site{Name: c.Name, MergeSlashes: c.MergeSlashes == nil || *c.MergeSlashes}
	if len(c.Hosts) == 0 {
		fail("hosts", "at least one host name is required")
	}
	for i, h := range c.Hosts {
		h = strings.ToLower(strings.TrimSpace(h))
		if h == "" || strings.ContainsAny(h, "/: ") || strings.Contains(h[min(1, len(h)):], "*") {
			fail(fmt.Sprintf("hosts[%d]", i), "%q is not a host name (no scheme, port or path; a leading \"*.\" matches subdomains)", c.Hosts[i])
			continue
		}
		s.Hosts = append(s.Hosts, h)
	}
	if s.Name == "" && len(s.Hosts) > 0 {
		s.Name = s.Hosts[0]
	}
	c.compileOrigins(s, fail)
	c.compileHTTPS(s, fail)
	c.compileForwardHeaders(s, fail)
	if p, err := c.Access.Compile(); err != nil {
		errs = append(errs, err)
	} else {
		s.Access = p
	}
	if c.Compression != nil {
		p, err := c.Compression.Compile()
		errs = append(errs, err)
		s.Compression = p
	}
	s.ShieldRegion = strings.TrimSpace(c.ShieldRegion)
	if c.SliceSize != 0 {
		if c.SliceSize < slice.MinSize || c.SliceSize > slice.MaxSize {
			fail("slice_size", "%s is outside %s to %s", c.SliceSize, units.Size(slice.MinSize), units.Size(slice.MaxSize))
		}
		s.SliceSize = int64(c.SliceSize)
	}
	switch q := strings.ToLower(c.CacheKey.Query); q {
	case "", "all", "ignore":
		s.query = q
		if len(c.CacheKey.Params) > 0 {
			fail("cache_key.params", "only used with query: include or exclude")
		}
	case "include", "exclude":
		s.query = q
		if len(c.CacheKey.Params) == 0 {
			fail("cache_key.params", "query: %s needs at least one parameter name", q)
		}
		s.params = c.CacheKey.Params
	default:
		fail("cache_key.query", "%q is not one of all, ignore, include, exclude", c.CacheKey.Query)
	}
	for i, rc := range c.Rules {
		r, err := rc.compile(fmt.Sprintf("rules[%d]", i))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s.rules = append(s.rules, r)
	}
	if c.DefaultRules == nil || *c.DefaultRules {
		r := defaultStatic
		s.rules = append(s.rules, &r)
	}
	fb := fallbackRule
	s.rules = append(s.rules, &fb)
	heuristic := c.compileHeuristic(fail)
	for _, r := range s.rules {
		if r.Action != ActionBypass {
			r.Policy.Heuristic = heuristic
			r.Policy.Heuristic.Static = r.Action == ActionCache
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return s, nil
}

func (rc RuleConfig) compile(name string) (*Rule, error) {
	var errs []error
	fail := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %s", name, field, fmt.Sprintf(format, a...)))
	}
	r := &Rule{Name: name, prefix: rc.PathPrefix}
	if rc.PathPrefix != "" && !strings.HasPrefix(rc.PathPrefix, "/") {
		fail("path_prefix", "%q must start with /", rc.PathPrefix)
	}
	for _, e := range rc.Extensions {
		e = strings.ToLower(strings.TrimPrefix(strings.TrimSpace(e), "."))
		if e == "" || strings.ContainsAny(e, "/.") {
			fail("extensions", "%q is not a file extension", e)
			continue
		}
		r.exts = append(r.exts, e)
	}
	if rc.Regex != "" {
		re, err := regexp.Compile(rc.Regex)
		if err != nil {
			fail("regex", "%v", err)
		}
		r.re = re
	}
	if rc.PathPrefix == "" && len(rc.Extensions) == 0 && rc.Regex == "" {
		errs = append(errs, fmt.Errorf("%s: needs path_prefix, extensions or regex", name))
	}
	switch rc.Action {
	case "cache":
		r.Action = ActionCache
		r.Policy = httpcache.Policy{TTL: time.Duration(rc.TTL), FollowOrigin: rc.FollowOrigin,
			CheckType: rc.CheckContentType == nil || *rc.CheckContentType, IgnoreCookie: rc.IgnoreCookie}
	case "bypass":
		r.Action = ActionBypass
		if rc.TTL != 0 || rc.FollowOrigin || rc.CheckContentType != nil || rc.IgnoreCookie {
			fail("ttl", "a bypass rule stores nothing, so ttl, follow_origin, check_content_type and ignore_cookie do not apply")
		}
	case "":
		fail("action", "required: cache or bypass")
	default:
		fail("action", "%q is not cache or bypass", rc.Action)
	}
	return r, errors.Join(errs...)
}

// ParseOrigin parses an origin base URL: http or https, a host name or IP, an
// optional port and path; no query, fragment or user info.
func ParseOrigin(s string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(s))
	switch {
	case err != nil:
		return nil, fmt.Errorf("%q is not a URL: %v", s, err)
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("%q: scheme must be http or https", s)
	case u.Host == "" || u.Hostname() == "":
		return nil, fmt.Errorf("%q: host is missing", s)
	case u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		return nil, fmt.Errorf("%q: an origin URL has no query, fragment or user info", s)
	}
	if p := u.Port(); p != "" {
		if _, err := net.LookupPort("tcp", p); err != nil {
			return nil, fmt.Errorf("%q: bad port %q", s, p)
		}
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	return u, nil
}

// Classify returns the first rule that matches the request path.
func (s *Site) Classify(p string) *Rule {
	for _, r := range s.rules {
		if r.matches(p) {
			return r
		}
	}
	return s.rules[len(s.rules)-1] // default-origin matches every path
}
