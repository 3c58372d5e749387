// Package budget keeps a site's origin requests within its origin budget:
// at most so many in flight, so many started per second and so many bytes
// received per second. Requests wait in order for a slot, client-facing
// fills before revalidations before background work, each for at most a
// queue timeout. In a mesh a node keeps only its share of the budget, the
// lease SetShare puts in force; SetLimits and SetShare change the limits
// without disturbing requests in flight.
package budget

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Class orders waiting origin requests: a lower class goes first.
type Class int

const (
	// Client is a fill a client waits for, or a pass-through request.
	Client Class = iota
	// Revalidation refreshes a stale object a client waits for.
	Revalidation
	// Background is prefetch and background refresh: nobody waits.
	Background
	classes
)

func (c Class) String() string {
	switch c {
	case Client:
		return "client"
	case Revalidation:
		return "revalidation"
	case Background:
		return "background"
	}
	return fmt.Sprintf("class(%d)", int(c))
}

// Limits is a budget or a share of one; zero in a field means no limit.
type Limits struct {
	Concurrency int     // requests in flight
	Rate        float64 // requests started per second
	Bandwidth   float64 // bytes received per second
}

// ErrQueueTimeout is an origin request that found no slot within the
// queue timeout.
var ErrQueueTimeout = errors.New("budget: no origin slot within the queue timeout")

// ErrClosed is an origin request made after Close.
var ErrClosed = errors.New("budget: closed")

// Budget hands out slots of its limits in order. Safe for concurrent use.
type Budget struct {
	queueTimeout time.Duration
	observe      func(c Class, waited time.Duration)

	mu       sync.Mutex
	lim      Limits
	share    *Limits // the lease in force; nil: this node keeps lim whole
	conc     int     // requests that may be in flight: lim's or the share's
	inflight int
	waiting  [classes][]*waiter
	rate     *rate.Limiter // nil without a rate limit
	bw       *rate.Limiter // nil without a bandwidth limit
	changed  chan struct{} // closed when the limits change
	onWait   func()        // told when a request has to wait
	timer    *time.Timer   // dispatches once the rate allows the next start
	closed   bool
	done     chan struct{} // closed by Close
}

// waiter is one request waiting for a slot; ready is closed once granted.
type waiter struct {
	ready   chan struct{}
	granted bool
}

// New returns a budget of lim whose requests wait at most queueTimeout;
// observe, when set, is told how long each granted request waited.
func New(lim Limits, queueTimeout time.Duration, observe func(Class, time.Duration)) *Budget {
	b := &Budget{queueTimeout: queueTimeout, observe: observe, done: make(chan struct{})}
	b.SetLimits(lim)
	return b
}

// Limits returns the budget's configured limits.
func (b *Budget) Limits() Limits {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lim
}

// SetLimits changes the configured limits (a reload). Requests in flight
// keep their slots; while more are in flight than a lower concurrency
// allows, none starts.
func (b *Budget) SetLimits(lim Limits) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lim = lim
	b.applyLocked()
}

// SetQueueTimeout changes how long later requests wait for a slot.
func (b *Budget) SetQueueTimeout(d time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.queueTimeout = d
}

// SetShare puts the budget under a lease: of each limit the configuration
// sets, the node may use share's, and a zero there means none at all (no
// request starts, no body byte is read). Limits the configuration does not
// set stay unlimited.
func (b *Budget) SetShare(share Limits) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.share = &share
	b.applyLocked()
}

// Share returns the lease in force, and false while the node keeps the
// whole budget.
func (b *Budget) Share() (Limits, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.share == nil {
		return Limits{}, false
	}
	return *b.share, true
}

// OnWait sets f to be called, outside the budget's lock, each time an
// origin request finds no slot and has to wait: the moment to ask the mesh
// for a larger share.
func (b *Budget) OnWait(f func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.onWait = f
}

// Demand returns the requests holding a slot and those waiting for one.
func (b *Budget) Demand() (inflight, waiting int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.inflight, b.waitingLocked()
}

// applyLocked puts lim and share in force and wakes whoever waits on them.
func (b *Budget) applyLocked() {
	eff := b.lim
	if b.share != nil {
		eff = *b.share
	}
	b.conc = math.MaxInt
	if b.lim.Concurrency > 0 {
		b.conc = eff.Concurrency
	}
	b.rate = limiter(b.rate, b.lim.Rate > 0, eff.Rate, 1)
	b.bw = limiter(b.bw, b.lim.Bandwidth > 0, eff.Bandwidth, minChunk)
	if b.changed != nil {
		close(b.changed)
	}
	b.changed = make(chan struct{})
	b.dispatchLocked(time.Now())
}

// limiter returns l (or a new limiter) set to perSecond with a burst of at
// least floor, nil when the limit is off. A zero perSecond lets nothing
// through.
func limiter(l *rate.Limiter, on bool, perSecond float64, floor int) *rate.Limiter {
	if !on {
		return nil
	}
	n := 0
	if perSecond > 0 {
		n = burst(perSecond, floor)
	}
	if l == nil {
		return rate.NewLimiter(rate.Limit(perSecond), n)
	}
	l.SetLimit(rate.Limit(perSecond))
	l.SetBurst(n)
	return l
}

// minChunk is the smallest read a bandwidth limit lets through at once.
const minChunk = 16 << 10

// burst is a tenth of a second's worth of limit per second, at least floor:
// what may start at once after a quiet moment.
func burst(perSecond float64, floor int) int {
	return int(math.Max(float64(floor), math.Min(perSecond/10, math.MaxInt32)))
}

// Inflight and Waiting count the requests holding and waiting for a slot.
func (b *Budget) Inflight() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.inflight
}

func (b *Budget) Waiting() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.waitingLocked()
}

func (b *Budget) waitingLocked() int {
	n := 0
	for _, q := range b.waiting {
		n += len(q)
	}
	return n
}

// Acquire waits for a slot for one origin request of class c: until one is
// free, ctx ends, or the queue timeout passes (ErrQueueTimeout). The slot
// is the caller's to release, once, when the request's response is done
// with.
func (b *Budget) Acquire(ctx context.Context, c Class) (release func(), err error) {
	start := time.Now()
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, ErrClosed
	}
	if b.conc == math.MaxInt && b.rate == nil {
		// No limit to wait for (a site without a budget): counted, at once.
		b.inflight++
		b.mu.Unlock()
		if b.observe != nil {
			b.observe(c, 0)
		}
		return sync.OnceFunc(b.release), nil
	}
	w := &waiter{ready: make(chan struct{})}
	b.waiting[c] = append(b.waiting[c], w)
	b.dispatchLocked(start)
	granted := w.granted // at once: no timer to start
	onWait, timeout := b.onWait, b.queueTimeout
	b.mu.Unlock()
	if !granted && onWait != nil {
		onWait()
	}
	if !granted {
		err = b.wait(ctx, c, w, timeout)
	}
	if err != nil {
		return nil, err
	}
	if b.observe != nil {
		b.observe(c, time.Since(start))
	}
	return sync.OnceFunc(b.release), nil
}

// wait waits for w, queued in class c, to be granted: until ctx ends or
// timeout passes.
func (b *Budget) wait(ctx context.Context, c Class, w *waiter, timeout time.Duration) (err error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-w.ready:
		return nil
	case <-timer.C:
		err = fmt.Errorf("%w (%v)", ErrQueueTimeout, timeout)
	case <-b.done:
		err = ErrClosed
	case <-ctx.Done():
		err = context.Cause(ctx)
	}
	if !b.leave(c, w) {
		return nil // granted meanwhile: the slot is taken after all
	}
	return err
}

// leave takes w out of its queue unless it was granted; it reports
// whether it left.
func (b *Budget) leave(c Class, w *waiter) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if w.granted {
		return false
	}
	q := b.waiting[c]
	for i, o := range q {
		if o == w {
			b.waiting[c] = append(q[:i:i], q[i+1:]...)
			break
		}
	}
	return true
}

func (b *Budget) release() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.inflight--
	b.dispatchLocked(time.Now())
}

// dispatchLocked grants slots to the first waiters, in class order, while
// the concurrency and the rate allow; when only the rate holds one back, a
// timer dispatches again once it allows.
func (b *Budget) dispatchLocked(now time.Time) {
	for {
		c := b.first()
		if c < 0 || b.closed {
			return
		}
		if b.inflight >= b.conc {
			return
		}
		if b.rate != nil {
			r := b.rate.ReserveN(now, 1)
			if !r.OK() {
				return // a share of no requests: until the next lease
			}
			if d := r.DelayFrom(now); d > 0 {
				r.CancelAt(now)
				if b.timer == nil {
					b.timer = time.AfterFunc(d, func() {
						b.mu.Lock()
						defer b.mu.Unlock()
						b.timer = nil
						b.dispatchLocked(time.Now())
					})
				}
				return
			}
		}
		w := b.waiting[c][0]
		b.waiting[c] = b.waiting[c][1:]
		w.granted = true
		b.inflight++
		close(w.ready)
	}
}

// first is the class of the first waiter to serve, -1 for none.
func (b *Budget) first() Class {
	for c := range classes {
		if len(b.waiting[c]) > 0 {
			return c
		}
	}
	return -1
}

// Body limits the rate at which body is read to the budget's bandwidth:
// reads wait for their bytes' share, so the origin's sending slows down
// behind TCP's flow control. Without a bandwidth limit, body as it is (a
// limit set later does not apply to it).
func (b *Budget) Body(ctx context.Context, body io.ReadCloser) io.ReadCloser {
	b.mu.Lock()
	limited := b.bw != nil
	b.mu.Unlock()
	if !limited {
		return body
	}
	return &limitedBody{ReadCloser: body, b: b, ctx: ctx}
}

type limitedBody struct {
	io.ReadCloser
	b   *Budget
	ctx context.Context
}

func (l *limitedBody) Read(p []byte) (int, error) {
	burst, err := l.b.allowance(l.ctx)
	if err != nil {
		return 0, err
	}
	if burst > 0 && len(p) > burst {
		p = p[:burst]
	}
	n, err := l.ReadCloser.Read(p)
	if werr := l.b.spend(l.ctx, n); werr != nil {
		return n, werr
	}
	return n, err
}

// allowance waits until the bandwidth lets bytes through and returns the
// most a read may take at once; 0 without a bandwidth limit.
func (b *Budget) allowance(ctx context.Context) (int, error) {
	for {
		b.mu.Lock()
		bw, changed := b.bw, b.changed
		b.mu.Unlock()
		if bw == nil {
			return 0, nil
		}
		if n := bw.Burst(); n > 0 {
			return n, nil
		}
		select { // a share of no bandwidth: until the next lease
		case <-changed:
		case <-b.done:
			return 0, ErrClosed
		case <-ctx.Done():
			return 0, context.Cause(ctx)
		}
	}
}

// spend waits until n bytes read fit the bandwidth, in pieces of the
// burst, which a new lease may change meanwhile.
func (b *Budget) spend(ctx context.Context, n int) error {
	for n > 0 {
		burst, err := b.allowance(ctx)
		if err != nil || burst == 0 {
			return err
		}
		b.mu.Lock()
		bw := b.bw
		b.mu.Unlock()
		k := min(n, burst)
		if err := bw.WaitN(ctx, k); err != nil {
			if k > bw.Burst() {
				continue // the burst shrank under a new lease: ask again
			}
			return err
		}
		n -= k
	}
	return nil
}

// Close fails the requests waiting and every later Acquire with ErrClosed.
func (b *Budget) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.closed {
		close(b.done)
	}
	b.closed = true
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
}

type classKey struct{}

// WithClass marks ctx as an origin request's of class c.
func WithClass(ctx context.Context, c Class) context.Context {
	return context.WithValue(ctx, classKey{}, c)
}

// ClassOf is the class ctx was marked with; Client when unmarked (a
// pass-through request, say).
func ClassOf(ctx context.Context) Class {
	if c, ok := ctx.Value(classKey{}).(Class); ok {
		return c
	}
	return Client
}
