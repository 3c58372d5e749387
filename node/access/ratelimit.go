package access

import (
	"fmt"
	"math"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/meshcdn/meshcdn/internal/units"
)

// RateLimitConfig limits each client address of a site to Requests per Per,
// with bursts of up to Burst (default Requests).
type RateLimitConfig struct {
	Requests int            `yaml:"requests"`
	Per      units.Duration `yaml:"per"`
	Burst    int            `yaml:"burst"`
}

// MaxTrackedClients bounds the clients a site's rate limit remembers at
// once (about 150 bytes each): past it, the least recently seen half is
// forgotten, which gives those clients a full bucket again.
const MaxTrackedClients = 100_000

// limiter is a token bucket per client address (golang.org/x/time/rate).
// Clients idle for a generation are forgotten: two maps, the current one and
// the one before; a client found in the older moves to the current, and
// each generation the older is dropped. A forgotten client would have had a
// full bucket again anyway, since a generation lasts at least the time the
// bucket takes to refill.
type limiter struct {
	limit rate.Limit
	burst int
	gen   time.Duration // a generation

	mu       sync.Mutex
	cur, old map[netip.Addr]*rate.Limiter
	since    time.Time // when cur began
	max      int
}

func (c RateLimitConfig) compile() (*limiter, error) {
	per := time.Duration(c.Per)
	if c.Requests <= 0 || per <= 0 {
		return nil, fmt.Errorf("rate_limit: requests (%d) and per (%v) must be positive", c.Requests, per)
	}
	burst := c.Burst
	if burst == 0 {
		burst = c.Requests
	}
	if burst < 0 {
		return nil, fmt.Errorf("rate_limit.burst: %d is negative", c.Burst)
	}
	l := rate.Limit(float64(c.Requests) / per.Seconds())
	refill := time.Duration(float64(burst) / float64(l) * float64(time.Second))
	return &limiter{limit: l, burst: burst, gen: max(refill, time.Minute), max: MaxTrackedClients,
		cur: map[netip.Addr]*rate.Limiter{}, old: map[netip.Addr]*rate.Limiter{}}, nil
}

// take spends one token of client's bucket at now; when there is none, it
// reports how long until there is.
func (l *limiter) take(client netip.Addr, now time.Time) (ok bool, retryAfter time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.since) >= l.gen || len(l.cur) >= l.max/2 {
		l.old, l.cur, l.since = l.cur, make(map[netip.Addr]*rate.Limiter, len(l.cur)), now
	}
	b := l.cur[client]
	if b == nil {
		if b = l.old[client]; b != nil {
			delete(l.old, client)
		} else {
			b = rate.NewLimiter(l.limit, l.burst)
		}
		l.cur[client] = b
	}
	r := b.ReserveN(now, 1)
	if !r.OK() {
		return false, time.Duration(math.MaxInt64)
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// tracked is how many clients the limiter remembers.
func (l *limiter) tracked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.cur) + len(l.old)
}
