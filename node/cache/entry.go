// Package cache is the edge's store: immutable entries (response metadata and
// body), a byte-bounded memory tier, and fills that clients read while the
// origin is still writing them.
package cache

import (
	"context"
	"io"
	"net/http"
	"sync"
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
	// Body is the complete representation on the heap; nil while the entry
	// only describes a fill in progress, and for a body the memory tier keeps
	// off the heap (see HasBody and Source).
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

	// rendered keeps a front's wire form of the status and header fields
	// (see Rendered). The tiers give a stored entry its own; a copy of an
	// entry carries the original's, which owner tells apart.
	rendered *rendering
	// off is the body when the memory tier keeps it off the heap.
	off *offHeap
}

type rendering struct {
	owner *Entry
	once  sync.Once
	form  any
}

// prepare gives e, which no reader has yet, a place of its own for its
// rendered form: the tiers call it as they store e.
func (e *Entry) prepare() { e.rendered = &rendering{owner: e} }

// Source is e's body in memory as a Body, made without an allocation.
func (e *Entry) Source() Body {
	if e.off != nil {
		return offHeapBody{e}
	}
	return entryBody{e}
}

// HasBody reports whether e holds its whole body, on the heap or off it
// (not a fill's head, nor a disk object served from its file).
func (e *Entry) HasBody() bool { return e.Body != nil || e.off != nil }

// moveOffHeap moves a long body off the heap (see OffHeapMin). It stays
// where it is when that cannot be done.
func (e *Entry) moveOffHeap() {
	if e.off != nil || len(e.Body) < OffHeapMin {
		return
	}
	if o, err := newOffHeap(e.Body); err == nil {
		e.off, e.Body = o, nil
	}
}

// entryBody is an entry's body in memory as a Body: Bytes(Body), in a
// value of one pointer, which an interface holds as it is.
type entryBody struct{ e *Entry }

func (b entryBody) Size() int64 { return int64(len(b.e.Body)) }
func (b entryBody) Copy(ctx context.Context, w io.Writer, client http.ResponseWriter, off, n int64) (int64, error) {
	return Bytes(b.e.Body).Copy(ctx, w, client, off, n)
}
func (b entryBody) Complete(context.Context) ([]byte, error) { return b.e.Body, nil }
func (b entryBody) Err() error                               { return nil }

// InMemory reports whether b is complete in memory: sent without waiting
// for anything.
func InMemory(b Body) bool {
	switch b.(type) {
	case Bytes, entryBody, offHeapBody:
		return true
	}
	return false
}

// Rendered returns render(e): a protocol front's form of the entry's
// status and header fields, made once for a stored entry (on its first
// response through that front) and kept with it, so its later responses
// only add their own fields. An entry that is not stored (a fill's head,
// a copy made for one response) is rendered on every call. A node has one
// front that renders (HTTP/1.1's; the others send the header map as it
// is), and render must depend on the entry alone.
func (e *Entry) Rendered(render func(*Entry) any) any {
	r := e.rendered
	if r == nil || r.owner != e {
		return render(e)
	}
	r.once.Do(func() { r.form = render(e) }) // the others wait for it
	return r.form
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

// ResponseFields are the fields a response from a stored entry gets beside
// the stored ones.
type ResponseFields struct {
	Age, CacheStatus string
	// AcceptRanges: "Accept-Ranges: bytes" is sent.
	AcceptRanges bool
	// VaryAcceptEncoding: "Vary: Accept-Encoding" is added, the response
	// being one the edge compresses for other clients.
	VaryAcceptEncoding bool
	// Size is the body's length (-1: unknown), which a HEAD answer states.
	Size int64
}

// weight approximates the entry's memory footprint in bytes, counting the
// rendered form a front may keep beside the fields (Rendered): about their
// length again.
func (e *Entry) weight() int {
	w := len(e.Body) + len(e.VaryKey) + 256 + 64
	if e.off != nil {
		w += int(e.off.n)
	}
	for k, vs := range e.Header {
		w += len(k) + 16
		for _, v := range vs {
			w += 2*len(v) + len(k) + 32
		}
	}
	return w
}
