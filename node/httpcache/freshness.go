package httpcache

import (
	"net/http"
	"slices"
	"strconv"
	"time"
)

// HeuristicMin is the heuristic freshness of a static rule's response
// without Last-Modified, and the least a static rule's response gets.
const HeuristicMin = 10 * time.Second

// Heuristic is the heuristic freshness (RFC 9111 §4.2.2) a response gets
// when neither the rule nor the origin gives one: Factor of the time since
// its Last-Modified, at most Max, as Traffic Server's and Squid's
// last-modified factor. A zero Factor gives none.
type Heuristic struct {
	Factor float64
	Max    time.Duration
	// Static, for the rules that treat a request as static, gives a
	// response at least HeuristicMin, also one without Last-Modified.
	Static bool
}

// DefaultHeuristic is a site's heuristic freshness unless it sets its own:
// 10% of the time since Last-Modified, at most a day.
var DefaultHeuristic = Heuristic{Factor: 0.1, Max: 24 * time.Hour}

// Lifetime is the heuristic freshness lifetime of a response with header
// h; ok is false when it gets none.
func (hp Heuristic) Lifetime(h http.Header) (ttl time.Duration, ok bool) {
	if hp.Factor <= 0 {
		return 0, false
	}
	lm, err := http.ParseTime(h.Get("Last-Modified"))
	if err != nil {
		if hp.Static {
			return min(HeuristicMin, hp.Max), true
		}
		return 0, false
	}
	date, err := http.ParseTime(h.Get("Date"))
	if err != nil {
		date = time.Now()
	}
	ttl = time.Duration(float64(date.Sub(lm)) * hp.Factor)
	if hp.Static {
		ttl = max(ttl, HeuristicMin)
	}
	ttl = min(ttl, hp.Max)
	return ttl, ttl > 0
}

// Policy is what the site's matched rule says about a cacheable request.
type Policy struct {
	// TTL, when positive, is the freshness lifetime the rule sets.
	TTL time.Duration
	// FollowOrigin makes the origin's explicit freshness win over TTL; TTL then only
	// applies when the origin gives none.
	FollowOrigin bool
	// Heuristic is the freshness a response gets when neither TTL nor the
	// origin gives one (the site's, Static for static rules).
	Heuristic Heuristic
	// CheckType stores a response the origin gives no freshness only when
	// its Content-Type fits the path's extension (TypeFits): a personal page
	// behind /account/x.css is not shared (web cache deception).
	CheckType bool
	// IgnoreCookie stores responses to requests with a Cookie without the
	// origin's explicit permission (see Decide).
	IgnoreCookie bool
}

// Request is what Decide needs of the request a response answers.
type Request struct {
	Authorized bool   // it carried Authorization
	Cookie     bool   // it carried Cookie
	Ext        string // its path's extension, lower case, without the dot
}

// Source says where a freshness lifetime came from.
type Source string

// Freshness sources.
const (
	SourceNone      Source = ""
	SourceSMaxAge   Source = "s-maxage"
	SourceMaxAge    Source = "max-age"
	SourceExpires   Source = "expires"
	SourceRule      Source = "rule"
	SourceHeuristic Source = "heuristic"
	SourceNoCache   Source = "no-cache" // stored, but every use is revalidated
)

// Decision is the verdict on one origin response.
type Decision struct {
	// Store reports whether the response may be stored.
	Store bool
	// Reason names why not, in Cache-Status detail form (e.g. "no-store").
	Reason string
	// Pass reports that the response is uncacheable by its own headers, so later
	// requests for the key should go to the origin in parallel (hit-for-pass).
	Pass bool
	// TTL is the freshness lifetime and Source where it came from.
	TTL    time.Duration
	Source Source
}

// heuristicStatus lists the status codes cacheable by default (RFC 9110 §15.1).
func heuristicStatus(code int) bool {
	switch code {
	case 200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501:
		return true
	}
	return false
}

// Decide applies RFC 9111 §3 (storing) and §4.2.1 (freshness lifetime) for a
// shared cache to a response to a GET request rq, together with the rule's
// policy. Responses that set a cookie are stored only when the origin marks
// them public or gives s-maxage, or names Set-Cookie in a qualified no-cache
// or private (the field is then stripped): a CDN that hands one user's
// cookie to another is a security bug. For the same reason, a response to a
// request with a Cookie is stored only with the origin's explicit permission
// (public, or a freshness of its own: s-maxage, max-age, Expires), unless
// the policy ignores cookies; and with CheckType, a response without the
// origin's freshness must have a Content-Type that fits the extension.
// Neither refusal marks the key hit-for-pass: another request may store it.
func Decide(status int, h http.Header, cc Directives, rq Request, p Policy) Decision {
	authorized := rq.Authorized
	switch {
	case status < 200 || status == http.StatusPartialContent || status == http.StatusNotModified:
		return Decision{Reason: "uncacheable-status"}
	case cc.NoStore:
		return Decision{Reason: "no-store", Pass: true}
	case cc.Private:
		return Decision{Reason: "private", Pass: true}
	case authorized && !cc.Public && cc.SMaxAge == Unset && !cc.MustRevalidate:
		return Decision{Reason: "authorization"}
	}
	if VaryStar(h) {
		return Decision{Reason: "vary-star", Pass: true}
	}
	if _, ok := h["Set-Cookie"]; ok && !cc.Public && cc.SMaxAge == Unset &&
		!contains(cc.NoCacheFields, "set-cookie") && !contains(cc.PrivateFields, "set-cookie") {
		return Decision{Reason: "set-cookie", Pass: true}
	}
	hasValidator := h.Get("ETag") != "" || h.Get("Last-Modified") != ""

	// An origin that says "do not reuse without asking" wins over every rule:
	// no-cache, or a zero max-age / s-maxage.
	if cc.NoCache || cc.SMaxAge == 0 || (cc.SMaxAge == Unset && cc.MaxAge == 0) {
		if !hasValidator {
			return Decision{Reason: "no-cache", Pass: true}
		}
		return Decision{Store: true, Source: SourceNoCache}
	}

	explicit, src := explicitLifetime(h, cc)
	switch {
	case rq.Cookie && src == SourceNone && !cc.Public && !p.IgnoreCookie:
		return Decision{Reason: "cookie"}
	case p.CheckType && src == SourceNone && !TypeFits(rq.Ext, h.Get("Content-Type")):
		return Decision{Reason: "content-type-mismatch"}
	}
	if p.TTL > 0 && heuristicStatus(status) && (!p.FollowOrigin || src == SourceNone) {
		return Decision{Store: true, TTL: p.TTL, Source: SourceRule}
	}
	if src != SourceNone {
		if explicit <= 0 && !hasValidator {
			return Decision{Reason: "expired"}
		}
		return Decision{Store: true, TTL: max(explicit, 0), Source: src}
	}
	if heuristicStatus(status) || cc.Public {
		if ttl, ok := p.Heuristic.Lifetime(h); ok {
			return Decision{Store: true, TTL: ttl, Source: SourceHeuristic}
		}
	}
	if !heuristicStatus(status) {
		return Decision{Reason: "uncacheable-status"}
	}
	return Decision{Reason: "no-freshness", Pass: true}
}

// explicitLifetime is RFC 9111 §4.2.1 for a shared cache: s-maxage, then max-age,
// then Expires − Date. An invalid Expires means already expired.
func explicitLifetime(h http.Header, cc Directives) (time.Duration, Source) {
	switch {
	case cc.SMaxAge != Unset:
		return seconds(cc.SMaxAge), SourceSMaxAge
	case cc.MaxAge != Unset:
		return seconds(cc.MaxAge), SourceMaxAge
	}
	exp, ok := h["Expires"]
	if !ok {
		return 0, SourceNone
	}
	if len(exp) != 1 { // several lines: invalid
		return 0, SourceExpires
	}
	t, ok := ParseHTTPDate(exp[0])
	if !ok {
		return 0, SourceExpires
	}
	date, err := http.ParseTime(h.Get("Date"))
	if err != nil {
		// Without a usable Date the response was generated now (RFC 9110 §6.6.1).
		date = time.Now()
	}
	return t.Sub(date), SourceExpires
}

func seconds(n int64) time.Duration { return time.Duration(n) * time.Second }

// InitialAge is corrected_initial_age of RFC 9111 §4.2.3: the age a response
// already had when it arrived, from its Age and Date fields and the round trip.
func InitialAge(h http.Header, requestTime, responseTime time.Time) time.Duration {
	var apparent time.Duration
	if date, err := http.ParseTime(h.Get("Date")); err == nil {
		apparent = max(0, responseTime.Sub(date))
	}
	var ageValue time.Duration
	if v := h.Get("Age"); v != "" {
		ageValue = seconds(ParseDelta(firstMember(v)))
	}
	corrected := ageValue + responseTime.Sub(requestTime)
	return max(apparent, corrected)
}

// AgeValue formats an age for the Age field: whole seconds, never negative.
func AgeValue(age time.Duration) string {
	if age < 0 {
		age = 0
	}
	return strconv.FormatInt(int64(age/time.Second), 10)
}

func contains(list []string, s string) bool { return slices.Contains(list, s) }

// StaleRules says how a stored response may be served stale (RFC 9111 §4.2.4,
// RFC 5861): never when it carries must-revalidate, proxy-revalidate, s-maxage
// (which implies proxy-revalidate for a shared cache) or no-cache; otherwise
// within its stale-while-revalidate and stale-if-error windows, which are -1
// when the response gives none.
func StaleRules(cc Directives) (noStale bool, swr, sie time.Duration) {
	noStale = cc.MustRevalidate || cc.ProxyRevalidate || cc.SMaxAge != Unset || cc.NoCache
	swr, sie = -1, -1
	if cc.StaleWhileRevalidate != Unset {
		swr = seconds(cc.StaleWhileRevalidate)
	}
	if cc.StaleIfError != Unset {
		sie = seconds(cc.StaleIfError)
	}
	return noStale, swr, sie
}
