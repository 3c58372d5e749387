package gossip

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/internal/testutil"
)

// testLog writes to the test's output until the test ends, then drops lines:
// memberlist's Shutdown does not wait for its last log line.
type testLog struct {
	mu   sync.Mutex
	w    io.Writer
	done bool
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done {
		return len(p), nil
	}
	return l.w.Write(p)
}

func newTestLog(t *testing.T) *slog.Logger {
	l := &testLog{w: t.Output()}
	t.Cleanup(func() { l.mu.Lock(); l.done = true; l.mu.Unlock() })
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func start(t *testing.T, name string, key []byte, join ...string) *Gossip {
	t.Helper()
	var keys [][]byte
	if key != nil {
		keys = [][]byte{key}
	}
	return startKeys(t, name, keys, join...)
}

func startKeys(t *testing.T, name string, keys [][]byte, join ...string) *Gossip {
	t.Helper()
	lg := newTestLog(t) // registered first, so its clean-up runs after Shutdown
	g, err := New(Config{Name: name, BindAddr: "127.0.0.1:0", Join: join, Keys: keys, Fast: true,
		Meta:   Meta{HTTPAddr: "127.0.0.1:80" + name[len(name)-1:], PeerAddr: "127.0.0.1:70", Region: "test"},
		Logger: lg})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Shutdown() })
	return g
}

func names(g *Gossip) string {
	var out []string
	for _, m := range g.Members() {
		out = append(out, m.Name)
	}
	return strings.Join(out, ",")
}

func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestClusterFormsAndShares(t *testing.T) {
	a := start(t, "n1", nil)
	b := start(t, "n2", nil, a.Addr())
	c := start(t, "n3", nil, b.Addr())
	for _, g := range []*Gossip{a, b, c} {
		eventually(t, 5*time.Second, "3 members at "+g.cfg.Name, func() bool { return names(g) == "n1,n2,n3" })
	}
	for _, m := range a.Members() {
		if m.Meta.Region != "test" || m.Meta.HTTPAddr != "127.0.0.1:80"+m.Name[1:] {
			t.Errorf("member %s metadata %+v", m.Name, m.Meta)
		}
	}
	select {
	case <-a.Changed():
	default:
		t.Error("no change signal after joins")
	}
}

// TestLeaveAndFailure: a graceful Leave and a hard stop both take the node off
// the others' member lists; the hard stop within the failure-detection bound.
func TestLeaveAndFailure(t *testing.T) {
	a := start(t, "n1", nil)
	b := start(t, "n2", nil, a.Addr())
	c := start(t, "n3", nil, a.Addr())
	eventually(t, 5*time.Second, "3 members", func() bool { return names(a) == "n1,n2,n3" && names(b) == "n1,n2,n3" && names(c) == "n1,n2,n3" })
	// On a starved machine a live member can miss its probes and be taken
	// for dead, then refute it: such false alarms, before the events under
	// test, are counted and are not what this test is about.
	left := time.Now()
	if err := b.Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	_ = b.Shutdown()
	eventually(t, 5*time.Second, "n2 gone after Leave", func() bool { return names(a) == "n1,n3" })
	for _, f := range a.Failed() {
		if f.Name == "n2" && !f.At.Before(left) {
			t.Fatalf("a graceful leave counted as a failure: %v", a.Failed())
		}
	}
	crashed, before := time.Now(), a.Failures()
	_ = c.Shutdown() // no Leave: a crash
	eventually(t, 10*time.Second, "n3 declared dead", func() bool { return names(a) == "n1" })
	t.Logf("a hard-stopped node left the member list after %v", time.Since(crashed).Round(10*time.Millisecond))
	if f := a.Failed(); a.Failures()-before != 1 || !slices.ContainsFunc(f, func(m Failure) bool { return m.Name == "n3" && !m.At.Before(crashed) }) {
		t.Fatalf("failures %d since the crash, failed %v; want n3 once", a.Failures()-before, f)
	}
	// A failed member that comes back is no longer listed as failed.
	start(t, "n3", nil, a.Addr())
	eventually(t, 5*time.Second, "n3 back", func() bool { return names(a) == "n1,n3" })
	if f := a.Failed(); len(f) != 0 {
		t.Fatalf("n3 came back but is still listed as failed: %v", f)
	}
}

// TestDrain: a draining node stays a member and the others see its flag; its
// later leave is still graceful.
func TestDrain(t *testing.T) {
	a := start(t, "n1", nil)
	b := start(t, "n2", nil, a.Addr())
	eventually(t, 5*time.Second, "2 members", func() bool { return names(a) == "n1,n2" && names(b) == "n1,n2" })
	for range len(a.Changed()) {
		<-a.Changed()
	}
	if err := b.Drain(time.Second); err != nil && !errors.Is(err, ErrNotSpread) {
		t.Fatal(err) // a wait cut short (a loaded machine) still spreads: checked next
	}
	draining := func() bool {
		for _, m := range a.Members() {
			if m.Name == "n2" {
				return m.Meta.Draining
			}
		}
		return false
	}
	eventually(t, 5*time.Second, "n1 sees n2 draining", draining)
	select {
	case <-a.Changed():
	default:
		t.Error("no change signal for the drain")
	}
	if err := b.SetStatus(true, 3, time.Second); err != nil && !errors.Is(err, ErrNotSpread) {
		t.Fatal(err)
	}
	if err := b.Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "n2 gone", func() bool { return names(a) == "n1" })
	// memberlist reaps the node that left (itself) after GossipToTheDeadTime
	// (2 s in the fast profile); a metadata update then would dereference
	// nil inside it. Updates are refused from the leave on, past the reaping.
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if err := b.SetStatus(false, 0, time.Second); err == nil {
			t.Fatal("SetStatus after Leave: no error")
		}
	}
	if err := b.Drain(time.Second); err == nil {
		t.Error("Drain after Leave: no error")
	}
	_ = b.Shutdown()
	if a.Failures() != 0 {
		t.Errorf("a drained node's leave counted as a failure")
	}
	if err := b.Drain(time.Second); err == nil {
		t.Error("Drain after Shutdown: no error")
	}
}

// TestJoinRetriesUntilSeedExists: a node whose seed is not up yet keeps
// trying, so nodes may start in any order; a DNS name is resolved.
func TestJoinRetriesUntilSeedExists(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	b := start(t, "n2", nil, "localhost:"+strconv.Itoa(port))
	eventually(t, 5*time.Second, "first join attempt over", b.JoinTried)
	g, err := New(Config{Name: "n1", BindAddr: "127.0.0.1:" + strconv.Itoa(port), Fast: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(context.Background()); err != nil {
		t.Skipf("the reserved port was taken meanwhile: %v", err)
	}
	defer g.Shutdown()
	eventually(t, 10*time.Second, "late seed joined", func() bool { return names(b) == "n1,n2" })
}

// TestKeyMismatch: nodes with different gossip keys do not form a cluster.
func TestKeyMismatch(t *testing.T) {
	k1 := []byte("0123456789abcdef")
	k2 := []byte("fedcba9876543210")
	a := start(t, "n1", k1)
	b := start(t, "n2", k2, a.Addr())
	c := start(t, "n3", k1, a.Addr())
	eventually(t, 5*time.Second, "same-key nodes join", func() bool { return names(a) == "n1,n3" })
	if names(b) != "n2" {
		t.Errorf("a node with another key joined: %s", names(b))
	}
	_ = c
}

// TestKeyRotation: a gossip key is rotated by rolling restarts. A node
// sends with its first key and accepts all of its keys, so a cluster whose
// nodes hold both the old and the new key (in either order) stays one; a
// node left with only the old key once the others send with the new one is
// cut off.
func TestKeyRotation(t *testing.T) {
	oldKey := []byte("0123456789abcdef")
	newKey := []byte("fedcba9876543210fedcba9876543210")
	a := startKeys(t, "n1", [][]byte{oldKey, newKey})           // step 1: the new key accepted
	b := startKeys(t, "n2", [][]byte{newKey, oldKey}, a.Addr()) // step 2: the new key sent
	eventually(t, 5*time.Second, "mixed nodes join", func() bool { return names(a) == "n1,n2" && names(b) == "n1,n2" })
	c := startKeys(t, "n3", [][]byte{newKey}, b.Addr()) // step 3: the old key dropped
	eventually(t, 5*time.Second, "a new-key node joins", func() bool { return names(b) == "n1,n2,n3" })
	d := startKeys(t, "n4", [][]byte{oldKey}, c.Addr())
	eventually(t, 5*time.Second, "n4 tried to join", d.JoinTried)
	if names(c) != "n1,n2,n3" || names(d) != "n4" {
		t.Errorf("an old-key node reached a new-key cluster: %s / %s", names(c), names(d))
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tt := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "name is required"},
		{Config{Name: "a", BindAddr: "7946"}, "bind address"},
		{Config{Name: "a", Keys: [][]byte{[]byte("0123456789abcdef"), []byte("short")}}, "key 2 is 5 bytes"},
		{Config{Name: "a", Join: []string{"nohost"}}, `seed "nohost"`},
		{Config{Name: "a", Meta: Meta{Region: strings.Repeat("x", 600)}}, "metadata is"},
	} {
		if _, err := New(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("New(%+v) = %v, want %q", tt.cfg, err, tt.want)
		}
	}
}

// TestAddrWhileMetadataChanges: the node's address can be read while its
// metadata changes (the join loop reads it while Drain and Leave spread new
// metadata); under the race detector this failed before the address was
// kept apart from memberlist's live node state.
func TestAddrWhileMetadataChanges(t *testing.T) {
	a := start(t, "n1", nil)
	b := start(t, "n2", nil, a.Addr())
	eventually(t, 5*time.Second, "2 members", func() bool { return names(a) == "n1,n2" && names(b) == "n1,n2" })
	want := b.Addr()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
				if got := b.Addr(); got != want {
					t.Errorf("Addr() = %q, then %q", want, got)
					return
				}
			}
		}
	})
	err := b.Drain(time.Second)
	if err == nil {
		err = b.Leave(time.Second)
	}
	close(done)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
}

// TestLeaveNotice: a member's leave notice, sent directly over TCP, makes
// its departure a leave even when the leaving flag in gossip never
// arrives (memberlist's queue lets the leave's own message replace it):
// here the member tells, then stops without any flag or leave message.
func TestLeaveNotice(t *testing.T) {
	a := start(t, "n1", nil)
	b := start(t, "n2", nil, a.Addr())
	// Both ways: n1 lists n2 as soon as it takes n2's state, before n2
	// has taken n1's, and n2 tells only the members it knows.
	eventually(t, 5*time.Second, "2 members", func() bool { return names(a) == "n1,n2" && names(b) == "n1,n2" })
	before := a.Failures()
	b.lifecycle.Lock()
	b.tellLeaving(2 * time.Second) // the mesh's default leave timeout
	b.lifecycle.Unlock()
	// The notice is a message of its own: on busy cores it may still be on
	// its way when tellLeaving's wait ends.
	eventually(t, 10*time.Second, "n1 told of n2's leave", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		_, ok := a.leaving["n2"]
		return ok
	})
	_ = b.Shutdown() // no flag, no leave: only the notice says it goes
	eventually(t, 10*time.Second, "n2 gone", func() bool { return names(a) == "n1" })
	if a.Failures() != before || len(a.Failed()) != 0 {
		t.Errorf("a member that gave notice counted as failed: %d %v", a.Failures()-before, a.Failed())
	}
	// Has tells a member that went away within the grace from one that went
	// longer ago, and from one never seen.
	if !a.Has("n1", 0) || !a.Has("n2", time.Hour) || a.Has("n2", 0) || a.Has("n3", time.Hour) {
		t.Errorf("Has: n1 %v, n2 within an hour %v, n2 within 0 %v, n3 %v", a.Has("n1", 0), a.Has("n2", time.Hour), a.Has("n2", 0), a.Has("n3", time.Hour))
	}
}

// TestJoinFailureLogged: seeds that do not resolve or answer are reported at
// Warn at the first attempt, then less and less often.
func TestJoinFailureLogged(t *testing.T) {
	var logs testutil.SyncBuffer
	g, err := New(Config{Name: "lonely", BindAddr: "127.0.0.1:0", Fast: true,
		Join:   []string{"nosuchhost.invalid:7946", "127.0.0.1:1"},
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Shutdown() })
	eventually(t, 10*time.Second, "a warning about the seeds", func() bool {
		return strings.Contains(logs.String(), "cannot join the cluster yet")
	})
	if out := logs.String(); !strings.Contains(out, "nosuchhost.invalid") || !strings.Contains(out, "127.0.0.1:1") {
		t.Errorf("the warning names neither seed's problem: %s", out)
	}
	eventually(t, 10*time.Second, "the fourth attempt", func() bool { return strings.Contains(logs.String(), "attempts=4") })
	if n := strings.Count(logs.String(), "cannot join the cluster yet"); n != 3 {
		t.Errorf("%d warnings by the fourth attempt; want 3 (attempts 1, 2 and 4)", n)
	}
}

// TestNotSpread: a metadata update whose wait ends before memberlist has
// sent it out enough says so (ErrNotSpread), and it reaches the others all
// the same.
func TestNotSpread(t *testing.T) {
	a := start(t, "n1", nil)
	b := start(t, "n2", nil, a.Addr())
	eventually(t, 5*time.Second, "2 members", func() bool { return names(a) == "n1,n2" && names(b) == "n1,n2" })
	// An update that did go out before the wait ended is no error: on busy
	// cores gossip may send one in the instant between queueing it and the
	// wait. Of a few tries, some must end unspread, and none otherwise.
	unspread := 0
	for load := 1; load <= 9; load++ {
		// memberlist waits for nobody while it holds no other member
		// alive, as a busy machine's failure detector may briefly decide.
		eventually(t, 10*time.Second, "n2 sees n1", func() bool { return names(b) == "n1,n2" })
		switch err := b.SetStatus(true, load, time.Nanosecond); {
		case errors.Is(err, ErrNotSpread):
			unspread++
		case err != nil:
			t.Fatalf("SetStatus with a wait of 1 ns: %v; want ErrNotSpread or nil", err)
		}
	}
	if unspread == 0 {
		t.Fatal("9 updates with a wait of 1 ns all spread in time; want ErrNotSpread")
	}
	eventually(t, 5*time.Second, "n1 sees n2's load", func() bool {
		return slices.ContainsFunc(a.Members(), func(m Member) bool { return m.Name == "n2" && m.Meta.Load == 9 })
	})
}

// refutes counts memberlist's refutations a node logs.
type refutes struct {
	slog.Handler
	n *atomic.Int64
}

func (h refutes) Handle(ctx context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "Refuting a dead message") {
		h.n.Add(1)
	}
	return h.Handler.Handle(ctx, r)
}

func (h refutes) WithAttrs(as []slog.Attr) slog.Handler { return refutes{h.Handler.WithAttrs(as), h.n} }
func (h refutes) WithGroup(name string) slog.Handler    { return refutes{h.Handler.WithGroup(name), h.n} }

// TestRejoinMeetsEveryone: a node back under its name and address, seeded
// by a member that never knew its previous life, meets every member as it
// joins, so the leave of that life the others still hold is refuted before
// its first join attempt ends, and no member drops it again afterwards.
func TestRejoinMeetsEveryone(t *testing.T) {
	a := start(t, "n1", nil)
	b := start(t, "n2", nil, a.Addr())
	c := start(t, "n3", nil, a.Addr())
	eventually(t, 5*time.Second, "3 members", func() bool { return names(a) == "n1,n2,n3" && names(b) == "n1,n2,n3" })
	addr := c.Addr()
	if err := c.Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	_ = c.Shutdown()
	eventually(t, 5*time.Second, "n3 gone", func() bool { return names(a) == "n1,n2" && names(b) == "n1,n2" })
	// n4 joins after the leave: it has no record of n3.
	d := start(t, "n4", nil, a.Addr())
	eventually(t, 5*time.Second, "n4 in", func() bool { return names(d) == "n1,n2,n4" })

	// memberlist sends the leave on for a bounded number of gossip rounds
	// (20 ms apart here) and tells nobody when the last went out: a
	// leave notice still in flight when n3 comes back would drop it
	// anywhere, fix or not. A restart takes longer than that.
	time.Sleep(time.Second)
	var refuted atomic.Int64
	back, err := New(Config{Name: "n3", BindAddr: addr, Join: []string{d.Addr()}, Fast: true,
		Meta:   Meta{HTTPAddr: "127.0.0.1:803", PeerAddr: "127.0.0.1:70", Region: "test"},
		Logger: slog.New(refutes{newTestLog(t).Handler(), &refuted})})
	if err != nil {
		t.Fatal(err)
	}
	if err := back.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = back.Shutdown() })
	failures := d.Failures()
	eventually(t, 10*time.Second, "n3's first join attempt", back.JoinTried)
	if refuted.Load() == 0 {
		t.Fatal("n3 joined without refuting its previous life's leave")
	}
	for _, g := range []*Gossip{a, b, d} {
		eventually(t, 5*time.Second, "n3 back at "+g.cfg.Name, func() bool { return names(g) == "n1,n2,n3,n4" })
	}
	if d.Failures() != failures {
		t.Errorf("n4 dropped n3 after taking it back: failed %v", d.Failed())
	}
}

// counting counts the records it handles.
type counting struct {
	slog.Handler
	n *atomic.Int64
}

func (h counting) Handle(ctx context.Context, r slog.Record) error {
	h.n.Add(1)
	return h.Handler.Handle(ctx, r)
}

// TestNoLogAfterShutdown: memberlist's goroutines may outlive its Shutdown
// and log; nothing they write reaches the node's log once Shutdown returns.
func TestNoLogAfterShutdown(t *testing.T) {
	var lines atomic.Int64
	g, err := New(Config{Name: "n1", BindAddr: "127.0.0.1:0", Fast: true,
		Logger: slog.New(counting{slog.NewTextHandler(io.Discard, nil), &lines})})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	_, _ = g.logw.Write([]byte("[WARN] memberlist: before"))
	if err := g.Shutdown(); err != nil {
		t.Fatal(err)
	}
	before := lines.Load()
	_, _ = g.logw.Write([]byte("[WARN] memberlist: a probe's line after Shutdown"))
	if before == 0 || lines.Load() != before {
		t.Errorf("%d lines before Shutdown, %d after; want some, then none", before, lines.Load()-before)
	}
}
