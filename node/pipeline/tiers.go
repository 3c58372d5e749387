package pipeline

import (
	"net/http"
	"time"

	"github.com/meshcdn/meshcdn/node/cache"
	"github.com/meshcdn/meshcdn/node/httpcache"
)

// The tiers a stored response is found in.
const (
	tierMemory = "memory" // the node's own objects
	tierCopies = "copies" // copies of objects other nodes own
	tierDisk   = "disk"
)

// lookupMode says how far a lookup goes and what it may change.
type lookupMode uint8

const (
	// serving reads a disk object's body and promotes it to memory.
	serving lookupMode = iota
	// explaining reads disk metadata only, and changes nothing.
	explaining
	// memoryOnly looks in memory and the copies alone.
	memoryOnly
)

// held is what the tiers hold for a request.
type held struct {
	e    *cache.Entry // the variant that matches the request; nil: none
	src  cache.Body   // e's body (unset when explaining)
	de   *cache.DiskEntry
	tier string
	// pass reports a key marked hit-for-pass: nothing else is set.
	pass bool
	// known reports that the key has variants, none of which may match;
	// vary names the Vary fields of the newest.
	known bool
	vary  []string
}

// stored is what a fill of the request revalidates.
func (h held) stored() *stored {
	return &stored{e: h.e, src: h.src, de: h.de, copy: h.tier == tierCopies}
}

// lookup finds the stored variant for a request with header h: memory,
// then the copies, then the disk tier. It is the one place the front, the
// fill's late re-check and Explain look in the store.
func (pl *Pipeline) lookup(key string, h http.Header, now time.Time, mode lookupMode) held {
	var f held
	if obj, ok := pl.store.Get(key); ok {
		if obj.Pass(now) {
			return held{pass: true}
		}
		if len(obj.Variants) > 0 {
			f.known, f.vary = true, obj.Variants[len(obj.Variants)-1].Vary
		}
		if e := matchVariant(obj, h); e != nil {
			f.e, f.src, f.tier = e, e.Source(), tierMemory
			return f
		}
	}
	if pl.copies != nil {
		if obj, ok := pl.copies.Get(key); ok {
			if e := matchVariant(obj, h); e != nil {
				f.e, f.src, f.tier = e, e.Source(), tierCopies
				return f
			}
		}
	}
	if mode == memoryOnly || pl.disk == nil {
		return f
	}
	vs := pl.disk.Get(key)
	if len(vs) == 0 {
		return f
	}
	if !f.known {
		f.known, f.vary = true, vs[len(vs)-1].Vary
	}
	de := matchDisk(vs, h)
	switch {
	case de == nil:
	case mode == explaining:
		f.e, f.de, f.tier = de.Entry, de, tierDisk
	default:
		if e, src := pl.fromDisk(key, de); e != nil {
			f.e, f.src, f.de, f.tier = e, src, de, tierDisk
		}
	}
	return f
}

// matchVariant returns the stored variant whose Vary fields match the request.
func matchVariant(obj *cache.Object, req http.Header) *cache.Entry {
	for i := len(obj.Variants) - 1; i >= 0; i-- {
		e := obj.Variants[i]
		if httpcache.SecondaryKey(e.Vary, req) == e.VaryKey {
			return e
		}
	}
	return nil
}

// matchDisk returns the disk variant whose Vary fields match the request.
func matchDisk(vs []*cache.DiskEntry, req http.Header) *cache.DiskEntry {
	for i := len(vs) - 1; i >= 0; i-- {
		if httpcache.SecondaryKey(vs[i].Vary, req) == vs[i].VaryKey {
			return vs[i]
		}
	}
	return nil
}

// fromDisk makes a disk entry servable. A body small enough for the memory tier
// is read, checked and promoted there (the memory tier's admission policy
// decides whether it stays); a larger one is served from its file.
func (pl *Pipeline) fromDisk(key string, de *cache.DiskEntry) (*cache.Entry, cache.Body) {
	if de.Size > pl.cfg.MaxObjectSize {
		return de.Entry, cache.FileBody(de.Path(), de.Size)
	}
	b, err := pl.disk.ReadBody(de)
	if err != nil {
		pl.log.Warn("disk entry unreadable; treated as a miss", "key", key, "err", err)
		return nil, nil
	}
	e := *de.Entry
	e.Body = b
	if pl.diskChecked.Load() { // else it is revalidated, and the result stored
		pl.store.Put(key, &e)
	}
	return &e, e.Source()
}

// invalidate drops everything stored under key, in every tier.
func (pl *Pipeline) invalidate(key string) bool {
	ok := pl.invalidateCodings(key)
	if pl.store.Invalidate(key) {
		ok = true
	}
	if pl.copies != nil && pl.copies.Invalidate(key) {
		ok = true
	}
	if pl.disk != nil && pl.disk.Invalidate(key) {
		ok = true
	}
	return ok
}

// Invalidate drops key from every tier (purge.Store's).
func (pl *Pipeline) Invalidate(key string) bool { return pl.invalidate(key) }

// Purge removes (or, soft, marks stale) what match selects in every tier
// (purge.Store's), and returns how many objects it touched.
func (pl *Pipeline) Purge(match cache.Match, soft bool) int {
	removed := pl.store.Purge(match, soft)
	if pl.copies != nil {
		removed += pl.copies.Purge(match, soft)
	}
	if pl.disk != nil {
		removed += pl.disk.Purge(match, soft)
	}
	return removed
}

// Peeked is what the tiers hold for a request, as Peek finds it.
type Peeked struct {
	Entry *cache.Entry // the variant that matches the request; nil: none
	Tier  string       // where Entry is: memory, copies or disk
	Pass  bool         // the key is marked hit-for-pass
}

// Peek looks for key's variant matching a request with header h, as a
// request would, without side effects: nothing read from disk, nothing
// promoted (the admin API's Explain).
func (pl *Pipeline) Peek(key string, h http.Header, now time.Time) Peeked {
	f := pl.lookup(key, h, now, explaining)
	return Peeked{Entry: f.e, Tier: f.tier, Pass: f.pass}
}
