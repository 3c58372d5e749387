package gcfloor

import (
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		live, floor uint64
		base, want  int
	}{
		{0, 64 * mib, 100, 1600},        // nothing live yet: the runtime's minimum reaches the floor
		{1 * mib, 64 * mib, 100, 1600},  // through the minimum (4 MiB * 16)
		{10 * mib, 64 * mib, 100, 540},  // through the live heap: 10 MiB * 6.4
		{32 * mib, 64 * mib, 100, 100},  // twice the live heap reaches it
		{200 * mib, 64 * mib, 100, 100}, // a large cache: the program's own
		{1 * mib, 64 * mib, 2000, 2000}, // never below the program's percentage
		{30 * mib, 64 * mib, 50, 114},   // 30 * 2.14 >= 64
		{30 * mib, 64 * mib, 200, 200},  // 30 * 3 >= 64
	} {
		if got := Percent(c.live, c.floor, c.base); got != c.want {
			t.Errorf("Percent(%d MiB live, floor %d MiB, base %d) = %d; want %d", c.live/mib, c.floor/mib, c.base, got, c.want)
		}
	}
}

var sink []byte

// cycles allocates n bytes of garbage in 16 KiB pieces and returns how many
// collections ran meanwhile.
func cycles(n int) uint32 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range n / (16 << 10) {
		sink = make([]byte, 16<<10)
	}
	runtime.ReadMemStats(&after)
	return after.NumGC - before.NumGC
}

func TestFloorCutsCollections(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	runtime.GC()
	without := cycles(512 << 20)
	runtime.GC() // so the floor starts from what is live
	f := Start(64 << 20)
	if f == nil {
		t.Fatal("Start returned nil with no floor active")
	}
	defer f.Stop()
	with := cycles(512 << 20)
	t.Logf("512 MiB of garbage, a small live heap: %d collections without the floor, %d with it (GOGC %d)", without, with, f.Percent())
	if with*4 > without {
		t.Errorf("%d collections with a 64 MiB floor against %d without: want at most a quarter", with, without)
	}
	if f.Percent() <= 100 {
		t.Errorf("GOGC %d under a small live heap; want it raised", f.Percent())
	}
}

func TestFloorGivesWayToALargeHeap(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	// A collection with nothing allocating meanwhile: what it marks is what
	// is live (a concurrent one under load also counts what was allocated
	// while it ran).
	runtime.GC()
	f := Start(32 << 20)
	if f == nil {
		t.Fatal("Start returned nil with no floor active")
	}
	defer f.Stop()
	if f.Percent() <= 100 {
		t.Fatalf("GOGC %d under a small live heap; want it raised", f.Percent())
	}
	live := make([]byte, 40<<20) // twice this is above the floor
	for i := range live {
		live[i] = byte(i)
	}
	// The cleanup that recomputes the percentage runs after a collection, on
	// the runtime's cleanup goroutine.
	deadline := time.Now().Add(10 * time.Second)
	for f.Percent() != 100 {
		if time.Now().After(deadline) {
			t.Fatalf("GOGC %d with 40 MiB live and a 32 MiB floor; want 100", f.Percent())
		}
		runtime.GC()
		time.Sleep(time.Millisecond)
	}
	runtime.KeepAlive(live)
}

func TestStartStop(t *testing.T) {
	old := debug.SetGCPercent(150)
	defer debug.SetGCPercent(old)
	runtime.GC() // what is live now is small
	f := Start(64 << 20)
	if f == nil {
		t.Fatal("Start returned nil with no floor active")
	}
	if Start(64<<20) != nil {
		t.Error("a second floor started while one is active")
	}
	if p := f.Percent(); p <= 150 {
		t.Errorf("GOGC %d; want above the program's 150", p)
	}
	f.Stop()
	f.Stop()
	if p := debug.SetGCPercent(150); p != 150 {
		t.Errorf("GOGC %d after Stop; want the program's 150 back", p)
	}
	g := Start(64 << 20)
	if g == nil {
		t.Fatal("no floor after the first one stopped")
	}
	g.Stop()
	var nilFloor *Floor
	nilFloor.Stop()

	debug.SetGCPercent(-1)
	if h := Start(64 << 20); h != nil {
		h.Stop()
		t.Error("a floor started with the collector off")
	}
}
