package cache

import (
	"math"
	"runtime"
	"slices"
	"sync/atomic"
	"time"

	"github.com/maypok86/otter/v2"
)

// MaxVariants bounds the Vary variants kept per key; the oldest goes first.
const MaxVariants = 16

// Object is everything stored under one primary key: the variants of the
// resource (one when the origin sends no Vary) and a hit-for-pass mark. An
// Object is immutable; every change stores a new one.
type Object struct {
	Variants []*Entry
	// PassUntil, when in the future, says the key's responses are not storable:
	// requests go to the origin in parallel instead of queueing on one fill.
	PassUntil time.Time
}

// Pass reports whether the object is a live hit-for-pass mark at now.
func (o *Object) Pass(now time.Time) bool { return now.Before(o.PassUntil) }

func (o *Object) weight() uint32 {
	w := 64
	for _, e := range o.Variants {
		w += e.weight()
	}
	return uint32(min(w, math.MaxUint32))
}

// Memory is the byte-bounded memory tier, built on otter (W-TinyLFU eviction).
// Eviction runs on the writing goroutine, so the tier exceeds its budget by at
// most the entry being written, and it starts no goroutines of its own.
type Memory struct {
	c         *otter.Cache[string, *Object]
	max       uint64
	evictions atomic.Uint64
	// left is how many bytes of bodies off the heap have left the tier
	// since the last collection it started: their memory files close once
	// the garbage collector finds nothing refers to them, and a heap that
	// the bodies never touch may grow too slowly to start one. Past
	// collectAt, the tier starts one itself. Every object removed or
	// replaced counts, also the variants a replacement keeps: an early
	// collection costs little.
	left      atomic.Int64
	collectAt int64
}

// collectMin is the least that collectAt may be: a collection per 8 MiB
// of bodies gone at most.
const collectMin = 8 << 20

// NewMemory returns a memory tier holding at most maxBytes of objects.
func NewMemory(maxBytes int64) *Memory {
	m := &Memory{max: uint64(max(maxBytes, 1)), collectAt: max(maxBytes/8, collectMin)}
	m.c = otter.Must(&otter.Options[string, *Object]{
		MaximumWeight: m.max,
		Weigher:       func(k string, o *Object) uint32 { return uint32(len(k)) + o.weight() },
		Executor:      func(fn func()) { fn() },
		OnDeletion: func(e otter.DeletionEvent[string, *Object]) {
			if e.WasEvicted() {
				m.evictions.Add(1)
			}
			for _, v := range e.Value.Variants {
				if v.off != nil {
					m.left.Add(v.off.n)
				}
			}
		},
	})
	return m
}

// collect starts a collection once collectAt bytes of bodies off the heap
// have left the tier, so that their memory files are released. Called
// after a change, outside otter's locks; one caller of those that find
// the mark passed runs it.
func (m *Memory) collect() {
	if m.left.Load() >= m.collectAt && m.left.Swap(0) >= m.collectAt {
		runtime.GC()
	}
}

// Hottest returns up to limit keys, those the eviction policy would keep
// longest first (by frequency once the tier is about half full; before
// that, mostly by recency).
func (m *Memory) Hottest(limit int) []string {
	var keys []string
	for e := range m.c.Hottest() {
		if len(keys) >= limit {
			break
		}
		keys = append(keys, e.Key)
	}
	return keys
}

// Get returns the object stored under key.
func (m *Memory) Get(key string) (*Object, bool) {
	return m.c.GetIfPresent(key)
}

// Put stores e as a variant of key. It replaces the variant with the same
// secondary key, and drops every variant whose Vary differs from e's (the
// origin changed what the resource varies on). It clears a hit-for-pass mark.
// A long body moves off the heap (OffHeapMin). e must not be in any
// reader's hands yet, and is not changed afterwards.
func (m *Memory) Put(key string, e *Entry) {
	e.prepare()
	e.moveOffHeap()
	m.c.Compute(key, func(old *Object, found bool) (*Object, otter.ComputeOp) {
		o := &Object{Variants: make([]*Entry, 0, 1)}
		if found {
			for _, v := range old.Variants {
				if v.VaryKey != e.VaryKey && slices.Equal(v.Vary, e.Vary) {
					o.Variants = append(o.Variants, v)
				}
			}
			if len(o.Variants) >= MaxVariants {
				o.Variants = o.Variants[len(o.Variants)-MaxVariants+1:]
			}
		}
		o.Variants = append(o.Variants, e)
		return o, otter.WriteOp
	})
	m.collect()
}

// MarkPass records that key's responses are not storable until until, and drops
// its variants.
func (m *Memory) MarkPass(key string, until time.Time) {
	m.c.Set(key, &Object{PassUntil: until})
	m.collect()
}

// Invalidate removes everything stored under key and reports whether there was
// anything.
func (m *Memory) Invalidate(key string) bool {
	_, ok := m.c.Invalidate(key)
	m.collect()
	return ok
}

// Stats is a snapshot of the tier's counters.
type Stats struct {
	Objects   int
	Bytes     uint64
	Capacity  uint64
	Evictions uint64
}

// Stats returns the tier's current size and eviction count.
func (m *Memory) Stats() Stats {
	return Stats{
		Objects:   m.c.EstimatedSize(),
		Bytes:     m.c.WeightedSize(),
		Capacity:  m.max,
		Evictions: m.evictions.Load(),
	}
}

// Close stops the tier's background work, if any.
func (m *Memory) Close() {
	m.c.StopAllGoroutines()
}

// Match selects entries to purge.
type Match func(key string, e *Entry) bool

// Purge removes the objects that have a variant matching m, or with soft
// stores those variants again as stale (freshness lifetime 0), so they are
// revalidated before use. It returns how many variants matched.
func (m *Memory) Purge(match Match, soft bool) int {
	type hit struct {
		key      string
		variants []*Entry
	}
	var hits []hit
	for k, o := range m.c.All() {
		var vs []*Entry
		for _, e := range o.Variants {
			if match(k, e) {
				vs = append(vs, e)
			}
		}
		if len(vs) > 0 {
			hits = append(hits, hit{k, vs})
		}
	}
	n := 0
	for _, h := range hits {
		n += len(h.variants)
		if !soft {
			m.Invalidate(h.key)
			continue
		}
		for _, e := range h.variants {
			m.Put(h.key, e.Stale())
		}
	}
	return n
}
