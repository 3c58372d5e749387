package mesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/gossip"
	"github.com/meshcdn/meshcdn/node/cache"
	"github.com/meshcdn/meshcdn/node/peer"
	peerv1 "github.com/meshcdn/meshcdn/proto/meshcdn/peer/v1"
	"github.com/meshcdn/meshcdn/ring"
)

// noLocal answers the peer calls a ring test never makes.
type noLocal struct{}

func (noLocal) PurgeLocal(*peerv1.PurgeRequest) int64 { return 0 }
func (noLocal) LocalStats() *peerv1.StatsResponse     { return &peerv1.StatsResponse{} }
func (noLocal) DrainLocal() error                     { return nil }
func (noLocal) HandOffDone(context.Context) (peer.HandOff, error) {
	return peer.HandOff{}, nil
}
func (noLocal) SyncPurges(*peerv1.SyncPurgesRequest) *peerv1.SyncPurgesResponse {
	return &peerv1.SyncPurgesResponse{}
}
func (noLocal) AppliedPurges([]string) []string         { return nil }
func (noLocal) ACMECertificate(string) ([]byte, []byte) { return nil, nil }
func (noLocal) ACMEChallenge(string) (string, bool)     { return "", false }
func (noLocal) Lease(*peerv1.LeaseRequest) (*peerv1.LeaseResponse, error) {
	return nil, errors.New("keeps no budget")
}

// start runs a mesh named name on loopback, joined to seed if any.
func start(t *testing.T, name string, seed *Mesh, tweak func(*Config)) *Mesh {
	t.Helper()
	return startWith(t, name, seed, tweak, nil)
}

// startWith is start with the node's Self changed by self, if set.
func startWith(t *testing.T, name string, seed *Mesh, tweak func(*Config), self func(*Self)) *Mesh {
	t.Helper()
	cfg := Config{PeerAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0", Fast: true}
	if seed != nil {
		cfg.Join = []string{seed.GossipAddr()}
	}
	if tweak != nil {
		tweak(&cfg)
	}
	store := cache.NewMemory(1 << 20)
	t.Cleanup(store.Close)
	me := Self{Name: name, HTTPAddr: "127.0.0.1:1", Handler: http.NotFoundHandler(), Local: noLocal{},
		Store: store, Logger: slog.New(slog.DiscardHandler)}
	if self != nil {
		self(&me)
	}
	m := New(cfg, me)
	if err := m.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = m.Leave()
		_ = m.Stop(ctx)
	})
	return m
}

// converged waits until every mesh's ring has n members.
func converged(t *testing.T, n int, ms ...*Mesh) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok := true
		for _, m := range ms {
			ok = ok && len(m.Ring().Members()) == n
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("rings did not converge to %d members within 10s", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func keys(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("www.example.test/k/%d.js", i)
	}
	return out
}

func owner(m *Mesh, key string) string {
	o, _ := m.Ring().Owner(key)
	return o
}

func names(refs []PeerRef) []string {
	var out []string
	for _, r := range refs {
		out = append(out, r.Name)
	}
	return out
}

// Owner names another member with its peer address, and "not ok" for the
// node's own keys.
func TestOwner(t *testing.T) {
	a := start(t, "a", nil, nil)
	b := start(t, "b", a, nil)
	converged(t, 2, a, b)
	var own, other int
	for _, k := range keys(200) {
		name, addr, ok := a.Owner(k)
		switch {
		case owner(a, k) == "a" && !ok:
			own++
		case owner(a, k) == "b" && ok && name == "b" && addr == b.PeerAddr():
			other++
		default:
			t.Fatalf("Owner(%s) = %q %q %v; ring owner %s", k, name, addr, ok, owner(a, k))
		}
	}
	if own == 0 || other == 0 {
		t.Fatalf("a owns %d, b %d of 200 keys", own, other)
	}
}

// After a member drains, the new owner of each of its keys knows where the
// key was (its previous owner), within the hand-off window only; keys that
// did not move have none. A change of metadata alone keeps that history,
// and an offering member is asked first.
func TestRingHistory(t *testing.T) {
	a := start(t, "a", nil, nil)
	b := start(t, "b", a, nil)
	c := start(t, "c", a, nil)
	converged(t, 3, a, b, c)
	before := map[string]string{}
	for _, k := range keys(300) {
		before[k] = owner(a, k)
	}
	epoch := a.Epoch()
	if !c.Drain(false) || c.Drain(false) {
		t.Fatal("Drain reports a first drain as new, and only that one")
	}
	converged(t, 2, a, b, c)
	for _, m := range []*Mesh{a, b} {
		for k, was := range before {
			now := owner(m, k)
			prev := names(m.PreviousOwners(k))
			switch {
			case now != m.self.Name:
			case was == "c" && !slices.Equal(prev, []string{"c"}):
				t.Fatalf("%s took %s over from c, yet its previous owners are %v", m.self.Name, k, prev)
			case was != "c" && len(prev) != 0:
				t.Fatalf("%s kept %s, yet its previous owners are %v", m.self.Name, k, prev)
			}
		}
	}
	// A member's status (load, readiness) changes its metadata, not the
	// rings: nothing is rebuilt and nobody is told of a change.
	regions := a.regions.Load()
	if err := b.SetStatus(true, 7); err != nil && !errors.Is(err, gossip.ErrNotSpread) {
		t.Fatal(err) // a wait cut short (a loaded machine) still spreads: checked next
	}
	for deadline := time.Now().Add(5 * time.Second); !slices.ContainsFunc(a.Members(), func(m Member) bool { return m.Name == "b" && m.Load == 7 }); {
		if time.Now().After(deadline) {
			t.Fatal("b's status did not reach a within 5 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if a.Rebuild() || a.regions.Load() != regions {
		t.Error("a metadata change rebuilt the rings or reported a change")
	}
	if a.Epoch() != epoch+1 {
		t.Errorf("epoch %d after one ring change and a metadata change, from %d", a.Epoch(), epoch)
	}
	var moved string
	for k, was := range before {
		if was == "c" && owner(a, k) == "a" {
			moved = k
		}
	}
	if got := names(a.PreviousOwners(moved)); !slices.Equal(got, []string{"c"}) {
		t.Errorf("after a metadata change, previous owners %v", got)
	}
	if got := names(a.HandOffSources(moved, "b")); !slices.Equal(got, []string{"b", "c"}) {
		t.Errorf("hand-off sources with b offering: %v", got)
	}
	if got := c.Members(); len(got) != 3 || got[slices.IndexFunc(got, func(m Member) bool { return m.Self })].State != "draining" {
		t.Errorf("members seen by the drained node: %+v", got)
	}
}

// A node that joins after the others' wave takes its keys over from the
// members there before it, however its view of them grew.
func TestJoinWave(t *testing.T) {
	const wave = 200 * time.Millisecond
	short := func(c *Config) { c.JoinWave = wave }
	a := start(t, "a", nil, short)
	b := start(t, "b", a, short)
	converged(t, 2, a, b)
	time.Sleep(wave) // the next node starts a wave of its own
	c := start(t, "c", a, short)
	converged(t, 3, a, b, c)
	before, err := ring.New([]string{"a", "b"}, ring.Config{})
	if err != nil {
		t.Fatal(err)
	}
	var took int
	for _, k := range keys(300) {
		if owner(c, k) != "c" {
			continue
		}
		took++
		was, _ := before.Owner(k)
		if prev := names(c.PreviousOwners(k)); !slices.Equal(prev, []string{was}) {
			t.Fatalf("c owns %s; its previous owners %v, want %s, which held it before c joined", k, prev, was)
		}
	}
	if took == 0 {
		t.Fatal("c owns none of 300 keys")
	}
}

// Two members drained together (a scale-in by two) must not hand objects
// to each other: a draining member refuses offers, and the member that
// offered them offers them again to their owners among the members that
// stay, before it has heard that the other drains.
func TestDrainPastDrainingMember(t *testing.T) {
	var mu sync.Mutex
	took := map[string][]string{} // key: the members that took it over
	taker := func(s *Self) {
		name := s.Name
		s.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, ok := peer.TakeOverFrom(r.Context()); ok {
				mu.Lock()
				took[r.Host+r.URL.RequestURI()] = append(took[r.Host+r.URL.RequestURI()], name)
				mu.Unlock()
			}
		})
	}
	a := startWith(t, "a", nil, nil, taker)
	b := startWith(t, "b", a, nil, taker)
	c := startWith(t, "c", a, nil, taker)
	d := startWith(t, "d", a, nil, taker)
	converged(t, 4, a, b, c, d)
	now := time.Now()
	ks := keys(200)
	for _, k := range ks {
		c.self.Store.(*cache.Memory).Put(k, &cache.Entry{Status: 200, Body: []byte("x"), Size: 1, ResponseTime: now, TTL: time.Hour})
	}
	// Which keys d owns while every ring has it: counted now, since the
	// rings drop d once its draining spreads (soon, on busy cores).
	var toD int
	for _, k := range ks {
		if owner(a, k) == "d" {
			toD++
		}
	}
	// d drains, and nobody has heard of it yet: every ring still has it.
	d.draining.Store(true)
	if !c.Drain(true) {
		t.Fatal("c drains already")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	h, err := c.HandOffDone(ctx)
	if err != nil || h.Taken != int64(len(ks)) || h.NotTaken != 0 {
		t.Fatalf("c's hand-off: %+v %v; want all %d objects taken", h, err, len(ks))
	}
	if taken, notTaken := c.HandedOff(); taken != uint64(len(ks)) || notTaken != 0 {
		t.Errorf("c counts %d offers taken and %d not; want %d and 0", taken, notTaken, len(ks))
	}
	stay, err := ring.New([]string{"a", "b"}, ring.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range ks {
		want, _ := stay.Owner(k)
		if got := took[k]; !slices.Equal(got, []string{want}) {
			t.Errorf("%s taken over by %v; want %s, its owner once c and d are gone", k, got, want)
		}
	}
	if toD == 0 {
		t.Fatal("d owns none of the keys: the test shows nothing")
	}
	t.Logf("%d of %d objects offered past d", toD, len(ks))
}
