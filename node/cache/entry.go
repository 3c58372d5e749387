// Package cache is the edge's store: immutable entries (response metadata and
// body), a byte-bounded memory tier, and fills that clients read while the
// origin is still writing them.
package cache

import (
	"net/http"
	"time"
)

// Entry is one stored response: a representation plus what is needed to judge
// its freshness. An Entry never changes once it is stored or handed to a reader;
// a refresh builds a new one.
type Entry struct {
	Status int
	// Header holds the end-to-end response fields as the origin sent them
	// (hop-by-hop and qualified private/no-cache fields removed).
	Header http.Header
	// Body is the complete representation; nil while the entry only describes a
	// fill in progress.
	Body []byte
	// Size is the representation's length, -1 while unknown (a fill without
	// Content-Length).
	Size int64

	// Vary lists the canonical names of the response's Vary field; VaryKey is
	// the secondary key of the request that produced it.
	Vary    []string
	VaryKey string

	// ResponseTime is when the response arrived; InitialAge its corrected initial
	// age (RFC 9111 §4.2.3); TTL its freshness lifetime and TTLSource where that
	// came from.
	ResponseTime time.Time
	InitialAge   time.Duration
	TTL          time.Duration
	TTLSource    string

	// Fetched is when a node of the cluster fetched (or revalidated) the
	// response from the origin; it travels with copies from peers. Purges
	// compare it with their issue time. Zero means ResponseTime.
	Fetched time.Time

	// NoStale forbids serving the entry stale (must-revalidate,
	// proxy-revalidate, s-maxage, no-cache). StaleWhileRevalidate and
	// StaleIfError are the origin's windows for serving it stale, -1 when the
	// origin gave none (the site's defaults apply).
	NoStale              bool
	StaleWhileRevalidate time.Duration
	StaleIfError         time.Duration

	// ETag and LastModified are the validators, kept parsed for the hit path.
	ETag         string
	LastModified time.Time

	// Uncompressed is, for a compressed variant the edge made itself, the
	// length of the representation it compressed; 0 for any other entry.
	Uncompressed int64
}

// FetchedAt is when the response came from the origin, as far as the
// cluster knows.
func (e *Entry) FetchedAt() time.Time {
	if e.Fetched.IsZero() {
		return e.ResponseTime
	}
	return e.Fetched
}

// Age is the entry's current age at now.
func (e *Entry) Age(now time.Time) time.Duration {
	return e.InitialAge + now.Sub(e.ResponseTime)
}

// Fresh reports whether the entry may be served without revalidation at now.
func (e *Entry) Fresh(now time.Time) bool {
	return e.Age(now) < e.TTL
}

// Stale returns a copy of e whose freshness has run out, for a soft purge.
func (e *Entry) Stale() *Entry {
	c := *e
	c.TTL = 0
	c.StaleWhileRevalidate = 0 // revalidate before any further use
	return &c
}

// Staleness is how long past its freshness lifetime the entry is at now.
func (e *Entry) Staleness(now time.Time) time.Duration {
	return e.Age(now) - e.TTL
}

// weight approximates the entry's memory footprint in bytes.
func (e *Entry) weight() int {
	w := len(e.Body) + len(e.VaryKey) + 256
	for k, vs := range e.Header {
		w += len(k) + 16
		for _, v := range vs {
			w += len(v) + 16
		}
	}
	return w
}
