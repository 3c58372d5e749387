// Package gcfloor keeps the garbage collector from running before the heap
// has grown by a floor of bytes.
//
// With GOGC=100 the runtime collects whenever the heap doubles. An edge that
// holds little (a pass-through site, a cache still warming) has a live heap
// of a few MiB, so a request rate of tens of thousands a second, each
// allocating a few KiB in net/http, starts a collection every few
// milliseconds: each one stops the world twice and wakes a second thread,
// and on a small machine shared with the load those wake-ups cost more than
// the marking. The floor raises GOGC while the live heap is small, so that
// the heap goal is at least the floor, and gives GOGC back (100, or what the
// program had) once twice the live heap is above it: a large cache is
// collected exactly as before, so memory per cached byte does not grow.
//
// The percentage is recomputed after every collection, from a cleanup
// attached to a sentinel allocated anew each cycle; no goroutine of the
// package runs.
package gcfloor

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
)

// heapMinimum is the runtime's smallest heap goal at GOGC=100; it scales
// with GOGC (runtime/mgcpacer.go), so a small live heap reaches the floor
// through it.
const heapMinimum = 4 << 20

// Floor is an active floor; Stop ends it.
type Floor struct {
	floor   uint64
	base    int
	stopped atomic.Bool
	mu      sync.Mutex // serialises Stop with a cleanup's update
	percent int        // the GOGC the floor set last
	sample  [1]metrics.Sample
}

var (
	activeMu sync.Mutex
	active   *Floor
)

// Start sets a floor of floor bytes under the heap goal. The percentage the
// program had (debug.SetGCPercent) is what the floor never goes below and
// what Stop restores. Start returns nil when a floor is already active in
// the process (there is one runtime to tune) or when the collector is off.
func Start(floor uint64) *Floor {
	activeMu.Lock()
	defer activeMu.Unlock()
	if active != nil {
		return nil
	}
	base := debug.SetGCPercent(100) // there is no getter: set, then put back
	debug.SetGCPercent(base)
	if base < 0 {
		return nil
	}
	f := &Floor{floor: floor, base: base, percent: base}
	f.sample[0].Name = "/gc/heap/live:bytes"
	active = f
	f.update()
	f.arm()
	return f
}

// Percent is the GOGC the floor set last.
func (f *Floor) Percent() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.percent
}

// Stop ends the floor and restores the program's percentage. It is safe to
// call on a nil Floor and more than once.
func (f *Floor) Stop() {
	if f == nil || f.stopped.Swap(true) {
		return
	}
	f.mu.Lock()
	debug.SetGCPercent(f.base)
	f.percent = f.base
	f.mu.Unlock()
	activeMu.Lock()
	if active == f {
		active = nil
	}
	activeMu.Unlock()
}

// arm attaches the next cycle's cleanup: the sentinel is unreachable as soon
// as arm returns, so the cleanup runs after the next collection.
func (f *Floor) arm() {
	sentinel := new([16]byte)
	runtime.AddCleanup(sentinel, func(f *Floor) {
		if f.stopped.Load() {
			return
		}
		f.update()
		f.arm()
	}, f)
}

// update sets the percentage for the live heap the last collection found.
// A collection that ran while the program allocated fast counts what was
// allocated meanwhile as live too, so the estimate errs high: the floor
// then gives way for a cycle, never the other way round.
func (f *Floor) update() {
	metrics.Read(f.sample[:])
	live := uint64(0)
	if f.sample[0].Value.Kind() == metrics.KindUint64 {
		live = f.sample[0].Value.Uint64()
	}
	p := Percent(live, f.floor, f.base)
	f.mu.Lock()
	defer f.mu.Unlock()
	// Small changes are not worth a call: the goal moves by less than an
	// eighth.
	if f.stopped.Load() || (p >= f.percent-f.percent/8 && p <= f.percent+f.percent/8 && (p == f.base) == (f.percent == f.base)) {
		return
	}
	debug.SetGCPercent(p)
	f.percent = p
}

// Percent is the smallest GOGC that puts the heap goal of a live heap at
// least at floor, and never below base. The runtime's goal is the larger of
// live*(1+GOGC/100) and heapMinimum*GOGC/100, so the smaller of the two
// percentages that reach the floor is enough.
func Percent(live, floor uint64, base int) int {
	if live*uint64(100+base)/100 >= floor {
		return base
	}
	viaMinimum := (floor*100 + heapMinimum - 1) / heapMinimum
	p := viaMinimum
	if live > 0 {
		viaLive := ((floor-live)*100 + live - 1) / live
		p = min(p, viaLive)
	}
	return max(int(p), base)
}
