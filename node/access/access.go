// Package access decides, per site and before any cache or origin work,
// whether a request may be served: signed URLs in Alibaba Cloud CDN's four
// formats, Referer, client address and User-Agent lists, and a rate limit
// per client address. A valid signed URL comes back without its signing
// parts, so the cache key, the rules and the origin see the clean URL.
//
// access knows nothing of caches, origins or peers.
package access

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Config is a site's access control, as written in its YAML.
type Config struct {
	URLAuth   *URLAuthConfig   `yaml:"url_auth"`
	Referer   *RefererConfig   `yaml:"referer"`
	IP        *IPConfig        `yaml:"ip"`
	UserAgent *ListConfig      `yaml:"user_agent"`
	RateLimit *RateLimitConfig `yaml:"rate_limit"`
}

// Why a request is refused, besides the signing reasons.
const (
	DeniedIP        = "ip-denied"
	DeniedReferer   = "referer-denied"
	DeniedUserAgent = "user-agent-denied"
	RateLimited     = "rate-limited"
)

// Policy is a compiled Config. A nil Policy allows everything. It is safe
// for concurrent use.
type Policy struct {
	auth       *urlAuth
	referer    *list[refererPattern]
	allowEmpty bool
	ip         *list[netip.Prefix]
	trusted    []netip.Prefix
	userAgent  *list[glob]
	limit      *limiter
}

// Compile checks c and returns its policy, nil when c sets nothing. Errors
// name the field.
func (c Config) Compile() (*Policy, error) {
	if c == (Config{}) {
		return nil, nil
	}
	p := &Policy{}
	var errs []error
	if c.URLAuth != nil {
		a, err := c.URLAuth.compile()
		errs = append(errs, err)
		p.auth = a
	}
	if r := c.Referer; r != nil {
		l, err := compileList("referer", r.ListConfig, parseReferer)
		errs = append(errs, err)
		p.referer = l
		p.allowEmpty = l != nil && !l.allow
		if r.AllowEmpty != nil {
			p.allowEmpty = *r.AllowEmpty
		}
	}
	if c.IP != nil {
		l, err := compileList("ip", c.IP.ListConfig, parsePrefix)
		errs = append(errs, err)
		p.ip = l
	}
	if c.IP != nil || c.RateLimit != nil {
		var proxies []string
		if c.IP != nil {
			proxies = c.IP.TrustProxy
		}
		for i, s := range proxies {
			pfx, err := parsePrefix(s)
			if err != nil {
				errs = append(errs, fmt.Errorf("ip.trust_proxy[%d]: %w", i, err))
				continue
			}
			p.trusted = append(p.trusted, pfx)
		}
	}
	if c.UserAgent != nil {
		l, err := compileList("user_agent", *c.UserAgent, parseGlob)
		errs = append(errs, err)
		p.userAgent = l
	}
	if c.RateLimit != nil {
		l, err := c.RateLimit.compile()
		errs = append(errs, err)
		p.limit = l
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return p, nil
}

// Request is what a decision looks at.
type Request struct {
	// Path is the escaped path, RawQuery the query, as the client sent them.
	Path, RawQuery string
	// Remote is the connection's address; Header the request's.
	Remote netip.Addr
	Header http.Header
	// Now is when the request arrived.
	Now time.Time
}

// Decision is what a policy says of a request.
type Decision struct {
	// Reason is empty when the request may be served; else why not (the
	// detail of its Cache-Status): AuthMissing, AuthExpired, AuthMismatch,
	// AuthDuplicate,
	// DeniedIP, DeniedReferer, DeniedUserAgent or RateLimited.
	Reason string
	// Status is 403, or 429 for RateLimited; 0 when allowed.
	Status int
	// RetryAfter is set with RateLimited.
	RetryAfter time.Duration
	// Path and RawQuery are the request's without its signing parts, when
	// Signed.
	Path, RawQuery string
	Signed         bool
}

// Client is the address a request is judged and limited by: the
// connection's, or the first X-Forwarded-For address when the connection
// comes from a trusted proxy.
func (p *Policy) Client(r *Request) netip.Addr {
	a := r.Remote.Unmap()
	if p == nil || len(p.trusted) == 0 || !slices.ContainsFunc(p.trusted, func(t netip.Prefix) bool { return t.Contains(a) }) {
		return a
	}
	if xff := r.Header.Values("X-Forwarded-For"); len(xff) > 0 {
		first, _, _ := strings.Cut(xff[0], ",")
		if c, err := netip.ParseAddr(strings.TrimSpace(first)); err == nil {
			return c.Unmap()
		}
	}
	return a
}

// Check decides r: the client address list first, then the User-Agent and
// Referer lists, the signature, and last the rate limit, so a request
// refused for another reason costs no token.
func (p *Policy) Check(r *Request) Decision { return p.decide(r, true) }

// Judge is Check without what depends on the client (the address list and
// the rate limit), for explaining a URL: it spends no token.
func (p *Policy) Judge(r *Request) Decision { return p.decide(r, false) }

func (p *Policy) decide(r *Request, withClient bool) Decision {
	if p == nil {
		return Decision{}
	}
	client := p.Client(r)
	if withClient && p.ip != nil && !p.ip.passes(func(pfx netip.Prefix) bool { return pfx.Contains(client) }) {
		return deny(DeniedIP)
	}
	if p.userAgent != nil && !p.userAgent.passes(func(g glob) bool { return g.matches(r.Header.Get("User-Agent")) }) {
		return deny(DeniedUserAgent)
	}
	if p.referer != nil && !p.refererPasses(r.Header.Get("Referer")) {
		return deny(DeniedReferer)
	}
	d := Decision{}
	if p.auth != nil {
		path, q, reason := p.auth.check(r.Path, r.RawQuery, r.Now)
		if reason != "" {
			return deny(reason)
		}
		d.Path, d.RawQuery, d.Signed = path, q, true
	}
	if withClient && p.limit != nil {
		if ok, wait := p.limit.take(client, r.Now); !ok {
			return Decision{Reason: RateLimited, Status: http.StatusTooManyRequests, RetryAfter: wait}
		}
	}
	return d
}

func deny(reason string) Decision { return Decision{Reason: reason, Status: http.StatusForbidden} }

func (p *Policy) refererPasses(v string) bool {
	if v == "" {
		return p.allowEmpty
	}
	host, ok := refererHost(v)
	if !ok {
		return !p.referer.allow // names no host: matches no entry
	}
	return p.referer.passes(func(pat refererPattern) bool { return pat.matches(host) })
}

// Describe lists the site's access rules, for Explain.
func (p *Policy) Describe() []string {
	if p == nil {
		return nil
	}
	var out []string
	mode := func(allow bool) string {
		if allow {
			return "allow"
		}
		return "deny"
	}
	if p.ip != nil {
		out = append(out, fmt.Sprintf("ip: %s list of %d networks", mode(p.ip.allow), len(p.ip.items)))
	}
	if len(p.trusted) > 0 {
		out = append(out, fmt.Sprintf("X-Forwarded-For believed from %d networks", len(p.trusted)))
	}
	if p.userAgent != nil {
		out = append(out, fmt.Sprintf("user_agent: %s list of %d patterns", mode(p.userAgent.allow), len(p.userAgent.items)))
	}
	if p.referer != nil {
		out = append(out, fmt.Sprintf("referer: %s list of %d hosts, empty Referer %s", mode(p.referer.allow), len(p.referer.items),
			map[bool]string{true: "allowed", false: "refused"}[p.allowEmpty]))
	}
	if a := p.auth; a != nil {
		where := "in the path"
		switch {
		case a.typ == 'A':
			where = "in ?" + a.param
		case a.typ == 'F' || a.queryFormOfC:
			where = "in ?" + a.param + " and ?" + a.timeParam
		}
		out = append(out, fmt.Sprintf("url_auth: type %c, signed %s, valid %v after its time, %d keys", a.typ, where, a.ttl, len(a.keys)))
	}
	if l := p.limit; l != nil {
		out = append(out, fmt.Sprintf("rate_limit: %.4g requests/s per client, bursts of %d", float64(l.limit), l.burst))
	}
	return out
}
