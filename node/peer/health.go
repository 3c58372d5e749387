package peer

import (
	"errors"
	"sync"
	"time"
)

// A peer that is still a member but does not answer (a frozen process, a
// gray failure) must not hold clients for the whole head timeout: gossip
// may take seconds to notice, or never. So a peer first accepts a fetch (it
// sends its response headers at once, before any origin work), and the
// wait for that is short and adaptive: the peer's smoothed accept time
// plus four deviations (RFC 6298's retransmission timeout), within
// [minAccept, the head timeout]. Two accept timeouts in a row make the peer
// suspect: fetches skip it but for one probe a second, until one is
// accepted again, and the fetches it had accepted but not yet answered (it
// froze meanwhile) stop waiting for their heads.
const (
	minAccept     = 250 * time.Millisecond
	initialAccept = time.Second // before any sample
	suspectAfter  = 2           // accept timeouts in a row
	probeEvery    = time.Second
)

// ErrSuspect is a fetch not sent because the peer recently failed to accept
// fetches in time.
var ErrSuspect = errors.New("peer is suspect: it did not accept recent fetches in time")

// ErrNotAccepted is a fetch the peer did not accept in time.
var ErrNotAccepted = errors.New("peer did not accept the fetch in time")

// responsiveness is what a pool knows of one peer's accept times.
type responsiveness struct {
	mu       sync.Mutex
	srtt     time.Duration
	rttvar   time.Duration
	samples  int
	timeouts int
	suspect  bool
	probeAt  time.Time
	// suspected is closed when the peer becomes suspect; a new one is made
	// when it answers again.
	suspected chan struct{}
}

// whenSuspect returns a channel closed once the peer becomes suspect.
func (r *responsiveness) whenSuspect() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.suspected == nil {
		r.suspected = make(chan struct{})
	}
	return r.suspected
}

// admit reports whether a fetch may go to the peer now: always unless it
// is suspect, then once per probeEvery.
func (r *responsiveness) admit(now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.suspect {
		return true
	}
	if now.Before(r.probeAt) {
		return false
	}
	r.probeAt = now.Add(probeEvery)
	return true
}

// bound is how long to wait for the peer to accept a fetch.
func (r *responsiveness) bound(max time.Duration) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.samples == 0 {
		return min(initialAccept, max)
	}
	return min(max, max2(minAccept, r.srtt+4*r.rttvar))
}

func max2(a, b time.Duration) time.Duration {
	if a > b {
		return a
	}
	return b
}

// accepted records an accept time; the peer is no longer suspect.
func (r *responsiveness) accepted(d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.samples == 0 {
		r.srtt, r.rttvar = d, d/2
	} else {
		diff := r.srtt - d
		if diff < 0 {
			diff = -diff
		}
		r.rttvar = (3*r.rttvar + diff) / 4
		r.srtt = (7*r.srtt + d) / 8
	}
	r.samples++
	if r.suspect {
		r.suspected = nil // made anew by the next whenSuspect
	}
	r.timeouts, r.suspect = 0, false
}

// timedOut records an accept timeout; it reports whether the peer became
// suspect.
func (r *responsiveness) timedOut(now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.timeouts++
	if r.timeouts >= suspectAfter && !r.suspect {
		r.suspect, r.probeAt = true, now.Add(probeEvery)
		if r.suspected == nil {
			r.suspected = make(chan struct{})
		}
		close(r.suspected)
		return true
	}
	return false
}

// Suspect lists the peers that fetches currently skip.
func (p *Pool) Suspect() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for addr, r := range p.health {
		r.mu.Lock()
		if r.suspect {
			out = append(out, addr)
		}
		r.mu.Unlock()
	}
	return out
}

// responsivenessOf returns the record of addr, made on first use.
func (p *Pool) responsivenessOf(addr string) *responsiveness {
	p.mu.Lock()
	defer p.mu.Unlock()
	r, ok := p.health[addr]
	if !ok {
		r = &responsiveness{}
		p.health[addr] = r
	}
	return r
}
