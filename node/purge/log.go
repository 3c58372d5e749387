package purge

import (
	"crypto/rand"
	"encoding/binary"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/meshcdn/meshcdn/node/cache"
	peerv1 "github.com/meshcdn/meshcdn/proto/meshcdn/peer/v1"
)

// Bounds of the purge log and of one page of it.
const (
	logRecords = 10000   // records kept
	logItems   = 200000  // URLs, prefixes and tags kept over all records
	pageBytes  = 1 << 20 // a SyncPurges answer stops growing past this
	pageLen    = 1000    // ... or at this many records
)

// Skew widens the time bound of a purge learnt late: what a node fetched up
// to this long after the issuer logged the purge is removed too, so clocks
// that disagree by less than this lose nothing.
const Skew = 2 * time.Second

// Log is the bounded list of purges a node has applied, in the order it
// learnt them, which other nodes read with SyncPurges to catch up on purges
// whose fan-out they missed. Records are numbered within an incarnation (one
// process lifetime), so a reader keeps one cursor per node it reads. Its
// methods are safe for concurrent use.
type Log struct {
	mu          sync.Mutex
	incarnation uint64
	next        uint64 // seq of the next record; the first is 1
	records     []*peerv1.PurgeRecord
	applied     []time.Time // when each record was added here, by this node's clock
	items       int
	ids         map[string]bool
	dropped     time.Time // latest issue time among dropped records
}

// NewLog returns an empty log of a new incarnation.
func NewLog() *Log {
	var b [8]byte
	_, _ = rand.Read(b[:])
	inc := binary.BigEndian.Uint64(b[:]) | 1 // never 0, which asks for everything
	return &Log{incarnation: inc, next: 1, ids: map[string]bool{}}
}

// Incarnation identifies this log among the restarts of its node.
func (l *Log) Incarnation() uint64 { return l.incarnation }

func items(p *peerv1.PurgeRequest) int {
	return len(p.GetKeys()) + len(p.GetKeyPrefixes()) + len(p.GetTags())
}

// Add records p unless a purge with its id is already in the log; it reports
// whether p is new.
func (l *Log) Add(p *peerv1.PurgeRequest) bool {
	p = bounded(p, time.Now())
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ids[p.GetId()] {
		return false
	}
	l.ids[p.GetId()] = true
	l.records = append(l.records, &peerv1.PurgeRecord{Seq: l.next, Purge: p})
	l.applied = append(l.applied, time.Now())
	l.next++
	l.items += items(p)
	for len(l.records) > logRecords || (l.items > logItems && len(l.records) > 1) {
		old := l.records[0].GetPurge()
		l.records[0] = nil
		l.records, l.applied = l.records[1:], l.applied[1:]
		l.items -= items(old)
		delete(l.ids, old.GetId())
		if t := old.GetIssued().AsTime(); t.After(l.dropped) {
			l.dropped = t
		}
	}
	return true
}

// bounded returns p, or a copy issued at now when p's issue time is missing
// or later than now by more than Skew: a purge issued in the future would
// match every object fetched until then, and keep this node from storing
// anything it learns late.
func bounded(p *peerv1.PurgeRequest, now time.Time) *peerv1.PurgeRequest {
	if t := p.GetIssued(); t.IsValid() && !t.AsTime().After(now.Add(Skew)) {
		return p
	}
	c := proto.CloneOf(p)
	c.Issued = timestamppb.New(now)
	return c
}

// Since returns a page of the records after the cursor (incarnation, after).
// A cursor of another incarnation reads from the start. truncated is the
// latest issue time of the records dropped after the cursor, zero when none
// was.
func (l *Log) Since(incarnation, after uint64) (recs []*peerv1.PurgeRecord, more bool, truncated time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if incarnation != l.incarnation {
		after = 0
	}
	first := l.next - uint64(len(l.records)) // seq of records[0]
	if after+1 < first {
		truncated = l.dropped
	}
	start := 0
	if after >= first {
		start = int(after - first + 1)
	}
	size := 0
	for _, r := range l.records[start:] {
		if len(recs) == pageLen || (len(recs) > 0 && size+proto.Size(r) > pageBytes) {
			return recs, true, truncated
		}
		size += proto.Size(r)
		recs = append(recs, r)
	}
	return recs, false, truncated
}

// Covers reports whether a purge in the log, issued after e was fetched
// from the origin (within Skew), matches e stored under key: a copy from a
// peer that may not have applied the purge yet. Purges the peer vouched
// for (see Vouch) are passed over.
func (l *Log) Covers(key string, e *cache.Entry, vouched []string) bool {
	return l.matches(key, e, Skew, vouched)
}

// Predates reports whether a purge in the log, issued after e was fetched
// from the origin by the clocks as they read, matches e stored under key: a
// copy from a peer that had not applied the purge. Purges the peer vouched
// for are passed over.
func (l *Log) Predates(key string, e *cache.Entry, vouched []string) bool {
	return l.matches(key, e, 0, vouched)
}

// recent reports whether a purge issued at issued may concern what was
// fetched at fetched: records are in about issue order, so once one is not,
// the older ones are not either.
func recent(issued, fetched time.Time) bool {
	return !issued.Add(Skew + time.Minute).Before(fetched)
}

// matches reports whether a purge in the log issued later than margin
// before e was fetched, and not vouched for, matches e stored under key.
func (l *Log) matches(key string, e *cache.Entry, margin time.Duration, vouched []string) bool {
	fetched := e.FetchedAt()
	var set *Set
	l.mu.Lock()
	for i := len(l.records) - 1; i >= 0; i-- {
		p := l.records[i].GetPurge()
		if !recent(p.GetIssued().AsTime(), fetched) {
			break
		}
		if slices.Contains(vouched, p.GetId()) {
			continue
		}
		if set == nil {
			set = NewSet()
		}
		set.AddBound(p, p.GetIssued().AsTime().Add(margin))
	}
	l.mu.Unlock()
	return set != nil && set.Match(key, e)
}

// Vouch returns the ids of the purges in the log that match e stored under
// key and that this node applied before e's response arrived here, recent
// enough that another node may still be wary of them (see matches). A node
// stores no response that a purge overtook (the purge generation is checked
// when a fill or revalidation is kept), so e was fetched after each of them
// took effect here: whoever receives e from this node need not suspect it
// of predating them, whatever the clocks say.
func (l *Log) Vouch(key string, e *cache.Entry) []string {
	fetched := e.FetchedAt()
	var ids []string
	var set *Set
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(l.records) - 1; i >= 0; i-- {
		p := l.records[i].GetPurge()
		if !recent(p.GetIssued().AsTime(), fetched) {
			break
		}
		if !l.applied[i].Before(e.ResponseTime) {
			continue
		}
		if set == nil {
			set = NewSet()
		} else {
			clear(set.keys)
			clear(set.prefixes)
			clear(set.tags)
		}
		set.AddBound(p, Forever)
		if set.Match(key, e) {
			ids = append(ids, p.GetId())
		}
	}
	return ids
}

// Has reports whether the log holds a purge with id.
func (l *Log) Has(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ids[id]
}

// All returns every record in the log.
func (l *Log) All() []*peerv1.PurgeRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*peerv1.PurgeRecord(nil), l.records...)
}

// Set is what a set of purges removes: entries that match one of them and
// were fetched before the matching purge's bound.
type Set struct {
	keys     map[string]time.Time
	prefixes map[string]time.Time
	tags     map[string]time.Time
	// Before matches everything fetched before it, whatever its key.
	Before time.Time
}

// NewSet returns an empty set.
func NewSet() *Set {
	return &Set{keys: map[string]time.Time{}, prefixes: map[string]time.Time{}, tags: map[string]time.Time{}}
}

func later(m map[string]time.Time, k string, t time.Time) {
	if t.After(m[k]) {
		m[k] = t
	}
}

// Forever bounds a purge applied as it arrives: it matches whatever is
// stored.
var Forever = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

// Add merges p, bounded by its issue time plus Skew.
func (s *Set) Add(p *peerv1.PurgeRequest) {
	s.AddBound(p, p.GetIssued().AsTime().Add(Skew))
}

// AddBound merges p: it matches what was fetched before bound.
func (s *Set) AddBound(p *peerv1.PurgeRequest, bound time.Time) {
	for _, k := range p.GetKeys() {
		later(s.keys, k, bound)
	}
	for _, k := range p.GetKeyPrefixes() {
		later(s.prefixes, k, bound)
	}
	for _, t := range p.GetTags() {
		later(s.tags, t, bound)
	}
}

// Empty reports whether the set matches nothing.
func (s *Set) Empty() bool {
	return len(s.keys)+len(s.prefixes)+len(s.tags) == 0 && s.Before.IsZero()
}

// Match reports whether e, stored under key, is purged by the set. It is a
// cache.Match.
func (s *Set) Match(key string, e *cache.Entry) bool {
	key = cache.BaseKey(key) // a compressed variant goes with its representation
	t := e.FetchedAt()
	if t.Before(s.Before) {
		return true
	}
	if b, ok := s.keys[key]; ok && t.Before(b) {
		return true
	}
	for p, b := range s.prefixes {
		if t.Before(b) && strings.HasPrefix(key, p) {
			return true
		}
	}
	if len(s.tags) == 0 {
		return false
	}
	found := false
	eachTag(e, func(tag string) bool {
		b, ok := s.tags[tag]
		found = ok && t.Before(b)
		return !found
	})
	return found
}

// eachTag calls f with every tag of the entry's Surrogate-Key (space
// separated) and Cache-Tag (comma separated) fields until f returns false.
func eachTag(e *cache.Entry, f func(string) bool) {
	for _, v := range e.Header.Values("Surrogate-Key") {
		for _, t := range strings.Fields(v) {
			if !f(t) {
				return
			}
		}
	}
	for _, v := range e.Header.Values("Cache-Tag") {
		for t := range strings.SplitSeq(v, ",") {
			if t = strings.TrimSpace(t); t != "" && !f(t) {
				return
			}
		}
	}
}

// late gathers purges learnt late, hard and soft apart.
type late struct{ hard, soft *Set }

func newLate() late { return late{hard: NewSet(), soft: NewSet()} }

func (l late) add(p *peerv1.PurgeRequest) {
	if p.GetSoft() {
		l.soft.Add(p)
	} else {
		l.hard.Add(p)
	}
}
