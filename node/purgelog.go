package node

import (
	"crypto/rand"
	"encoding/binary"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/meshcdn/meshcdn/node/cache"
	peerv1 "github.com/meshcdn/meshcdn/proto/meshcdn/peer/v1"
)

// Bounds of the purge log and of one page of it.
const (
	purgeLogRecords = 10000   // records kept
	purgeLogItems   = 200000  // URLs, prefixes and tags kept over all records
	purgePageBytes  = 1 << 20 // a SyncPurges answer stops growing past this
	purgePageLen    = 1000    // ... or at this many records
)

// purgeSkew widens the time bound of a purge learnt late: what a node fetched
// up to this long after the issuer logged the purge is removed too, so clocks
// that disagree by less than this lose nothing.
const purgeSkew = 2 * time.Second

// purgeLog is the bounded list of purges a node has applied, in the order it
// learnt them, which other nodes read with SyncPurges to catch up on purges
// whose fan-out they missed. Records are numbered within an incarnation (one
// process lifetime), so a reader keeps one cursor per node it reads.
type purgeLog struct {
	mu          sync.Mutex
	incarnation uint64
	next        uint64 // seq of the next record; the first is 1
	records     []*peerv1.PurgeRecord
	items       int
	ids         map[string]bool
	dropped     time.Time // latest issue time among dropped records
}

func newPurgeLog() *purgeLog {
	var b [8]byte
	_, _ = rand.Read(b[:])
	inc := binary.BigEndian.Uint64(b[:]) | 1 // never 0, which asks for everything
	return &purgeLog{incarnation: inc, next: 1, ids: map[string]bool{}}
}

func purgeItems(p *peerv1.PurgeRequest) int {
	return len(p.GetKeys()) + len(p.GetKeyPrefixes()) + len(p.GetTags())
}

// add records p unless a purge with its id is already in the log; it reports
// whether p is new.
func (l *purgeLog) add(p *peerv1.PurgeRequest) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ids[p.GetId()] {
		return false
	}
	l.ids[p.GetId()] = true
	l.records = append(l.records, &peerv1.PurgeRecord{Seq: l.next, Purge: p})
	l.next++
	l.items += purgeItems(p)
	for len(l.records) > purgeLogRecords || (l.items > purgeLogItems && len(l.records) > 1) {
		old := l.records[0].GetPurge()
		l.records[0] = nil
		l.records = l.records[1:]
		l.items -= purgeItems(old)
		delete(l.ids, old.GetId())
		if t := old.GetIssued().AsTime(); t.After(l.dropped) {
			l.dropped = t
		}
	}
	return true
}

// since returns a page of the records after the cursor (incarnation, after).
// A cursor of another incarnation reads from the start. truncated is the
// latest issue time of the records dropped after the cursor, zero when none
// was.
func (l *purgeLog) since(incarnation, after uint64) (recs []*peerv1.PurgeRecord, more bool, truncated time.Time) {
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
		if len(recs) == purgePageLen || (len(recs) > 0 && size+proto.Size(r) > purgePageBytes) {
			return recs, true, truncated
		}
		size += proto.Size(r)
		recs = append(recs, r)
	}
	return recs, false, truncated
}

// covers reports whether a purge in the log, issued after e was fetched
// from the origin (within purgeSkew), matches e stored under key: a copy
// from a peer that had not applied the purge yet.
func (l *purgeLog) covers(key string, e *cache.Entry) bool {
	fetched := e.FetchedAt()
	var set *timedPurge
	l.mu.Lock()
	for i := len(l.records) - 1; i >= 0; i-- {
		p := l.records[i].GetPurge()
		if p.GetIssued().AsTime().Add(purgeSkew + time.Minute).Before(fetched) {
			break // records are in about issue order: the rest are older
		}
		if set == nil {
			set = newTimedPurge()
		}
		set.add(p)
	}
	l.mu.Unlock()
	return set != nil && set.match(key, e)
}

// has reports whether the log holds a purge with id.
func (l *purgeLog) has(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ids[id]
}

// all returns every record in the log.
func (l *purgeLog) all() []*peerv1.PurgeRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*peerv1.PurgeRecord(nil), l.records...)
}

// timedPurge is what a set of purges learnt late removes: entries that match
// one of them and were fetched before the matching purge's bound.
type timedPurge struct {
	keys     map[string]time.Time
	prefixes map[string]time.Time
	tags     map[string]time.Time
	before   time.Time // everything fetched before this, whatever its key
}

func newTimedPurge() *timedPurge {
	return &timedPurge{keys: map[string]time.Time{}, prefixes: map[string]time.Time{}, tags: map[string]time.Time{}}
}

func later(m map[string]time.Time, k string, t time.Time) {
	if t.After(m[k]) {
		m[k] = t
	}
}

// forever bounds a purge applied as it arrives: it matches whatever is
// stored.
var forever = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

// add merges p, bounded by its issue time plus purgeSkew.
func (s *timedPurge) add(p *peerv1.PurgeRequest) {
	s.addBound(p, p.GetIssued().AsTime().Add(purgeSkew))
}

// addBound merges p: it matches what was fetched before bound.
func (s *timedPurge) addBound(p *peerv1.PurgeRequest, bound time.Time) {
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

func (s *timedPurge) empty() bool {
	return len(s.keys)+len(s.prefixes)+len(s.tags) == 0 && s.before.IsZero()
}

// match reports whether e, stored under key, is purged by the set.
func (s *timedPurge) match(key string, e *cache.Entry) bool {
	t := e.FetchedAt()
	if t.Before(s.before) {
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
