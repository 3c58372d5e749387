package slice

import (
	"sync"
	"time"
)

// A Memo remembers names (a site whose origin ignores ranges, an object
// whose slices disagreed) for a while, so that the pipeline stops slicing
// what cannot be sliced. It holds at most its bound: when full, expired
// names go first, then arbitrary ones, so a stranger who makes many
// objects disagree costs memory only up to the bound. Safe for concurrent
// use.
type Memo struct {
	ttl time.Duration
	max int

	mu    sync.Mutex
	until map[string]time.Time
}

// NewMemo returns a Memo whose names are forgotten ttl after they were
// marked, holding at most max of them.
func NewMemo(ttl time.Duration, max int) *Memo {
	return &Memo{ttl: ttl, max: max, until: map[string]time.Time{}}
}

// TTL is how long a name is remembered.
func (m *Memo) TTL() time.Duration { return m.ttl }

// Mark remembers name until ttl after now. It reports whether name was
// not remembered already (so that the caller logs it once).
func (m *Memo) Mark(name string, now time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, had := m.until[name]
	fresh := !had || !now.Before(t)
	if !had && len(m.until) >= m.max {
		m.evict(now)
	}
	m.until[name] = now.Add(m.ttl)
	return fresh
}

// evict makes room for one name: every expired one goes, else one
// arbitrary name.
func (m *Memo) evict(now time.Time) {
	for k, t := range m.until {
		if !now.Before(t) {
			delete(m.until, k)
		}
	}
	for k := range m.until {
		if len(m.until) < m.max {
			return
		}
		delete(m.until, k)
	}
}

// Has reports whether name was marked less than ttl before now.
func (m *Memo) Has(name string, now time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.until[name]
	if ok && !now.Before(t) {
		delete(m.until, name)
		return false
	}
	return ok
}
