package purge

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/meshcdn/meshcdn/node/cache"
	"github.com/meshcdn/meshcdn/node/peer"
	peerv1 "github.com/meshcdn/meshcdn/proto/meshcdn/peer/v1"
)

// member is one purge service of a test cluster: a real memory tier, and a
// real peer server on loopback that answers through the service.
type member struct {
	name  string
	svc   *Service
	store *cache.Memory
	addr  string
	stop  func() // stops its peer server, as a crash would
}

// view is the membership every member of a test cluster shares; gossip is
// tested in its own package.
type view struct {
	mu       sync.Mutex
	self     string
	members  []*member
	failed   []Failure
	failures atomic.Uint64
}

func (v *view) Members() []Member {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []Member
	for _, m := range v.members {
		out = append(out, Member{Name: m.name, PeerAddr: m.addr, Self: m.name == v.self})
	}
	return out
}

func (v *view) Peers() map[string]string {
	out := map[string]string{}
	for _, m := range v.Members() {
		out[m.Name] = m.PeerAddr
	}
	return out
}

func (v *view) Failed() []Failure {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]Failure(nil), v.failed...)
}
func (v *view) Failures() uint64 { return v.failures.Load() }
func (v *view) Alone() bool      { return len(v.Members()) <= 1 }
func (v *view) Owner(key string) (string, bool) {
	ms := v.Members()
	return ms[len(key)%len(ms)].Name, true
}

// local is what the peer server passes on to the service.
type local struct{ s *Service }

func (l local) PurgeLocal(req *peerv1.PurgeRequest) int64 { return l.s.Apply(req) }
func (l local) LocalStats() *peerv1.StatsResponse         { return &peerv1.StatsResponse{} }
func (l local) DrainLocal() error                         { return nil }
func (l local) HandOffDone(context.Context) (peer.HandOff, error) {
	return peer.HandOff{}, nil
}
func (l local) SyncPurges(req *peerv1.SyncPurgesRequest) *peerv1.SyncPurgesResponse {
	return l.s.Page(req)
}
func (l local) AppliedPurges(ids []string) []string   { return l.s.Applied(ids) }
func (local) ACMECertificate(string) ([]byte, []byte) { return nil, nil }
func (local) ACMEChallenge(string) (string, bool)     { return "", false }
func (local) Lease(*peerv1.LeaseRequest) (*peerv1.LeaseResponse, error) {
	return nil, errors.New("keeps no budget")
}

// cluster starts n members that see each other, with lease.
func cluster(t *testing.T, n int, lease time.Duration) []*member {
	t.Helper()
	pool := peer.NewPool(time.Second, nil)
	t.Cleanup(pool.CloseAll)
	var ms []*member
	var views []*view
	for i := range n {
		m := &member{name: string(rune('a' + i)), store: cache.NewMemory(1 << 20)}
		t.Cleanup(m.store.Close)
		v := &view{self: m.name}
		views = append(views, v)
		m.svc = New(Config{Self: m.name, Store: m.store, Mesh: v, Peers: pool, Lease: lease})
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s := grpc.NewServer()
		peerv1.RegisterPeerServiceServer(s, peer.NewServer(http.NotFoundHandler(), local{m.svc}, nil, slog.New(slog.DiscardHandler)))
		done := make(chan struct{})
		go func() { defer close(done); _ = s.Serve(ln) }()
		m.addr, m.stop = ln.Addr().String(), sync.OnceFunc(func() { s.Stop(); <-done })
		t.Cleanup(m.stop)
		ms = append(ms, m)
	}
	for i, m := range ms {
		views[i].members = ms
		m.svc.Start(t.Context())
		t.Cleanup(m.svc.Stop)
	}
	return ms
}

// put stores a body under key, fetched from the origin at fetched.
func put(m *member, key string, fetched time.Time) {
	m.store.Put(key, &cache.Entry{Status: 200, Header: http.Header{}, Body: []byte("v"), ResponseTime: fetched, TTL: time.Hour})
}

func held(m *member, key string) bool {
	_, ok := m.store.Get(key)
	return ok
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A purge a member missed reaches it from another member's log: what it
// fetched before the purge goes, what it fetched after stays, and the
// cursor keeps it from applying a purge twice.
func TestCatchUp(t *testing.T) {
	ms := cluster(t, 2, 200*time.Millisecond)
	a, b := ms[0], ms[1]
	issued := time.Now()
	put(b, "h/old", issued.Add(-time.Minute))
	put(b, "h/new", issued.Add(time.Minute))
	put(b, "h/tagged", issued.Add(-time.Minute))
	a.svc.Apply(&peerv1.PurgeRequest{Id: "p1", Keys: []string{"h/old", "h/new"}, Issued: timestamppb.New(issued)})
	a.svc.Apply(&peerv1.PurgeRequest{Id: "p2", KeyPrefixes: []string{"h/tag"}, Soft: true, Issued: timestamppb.New(issued)})
	eventually(t, "b catches up", func() bool { return b.svc.CaughtUp() == 2 })
	if held(b, "h/old") || !held(b, "h/new") {
		t.Errorf("after catching up: old held %v, new held %v; want only the new one", held(b, "h/old"), held(b, "h/new"))
	}
	if obj, ok := b.store.Get("h/tagged"); !ok || obj.Variants[0].Fresh(time.Now()) {
		t.Error("a soft purge caught up late did not mark the object stale")
	}
	if got := b.svc.Applied([]string{"p1", "p2", "p3"}); len(got) != 2 {
		t.Errorf("b applied %v", got)
	}
	for range 3 { // more rounds from the cursor
		<-b.svc.startRound()
	}
	if b.svc.CaughtUp() != 2 {
		t.Errorf("caught up %d purges; a cursor should make it 2", b.svc.CaughtUp())
	}
}

// A member that cannot read any log past the lease is out of step: it
// reports objects older than the lease as suspect (and not ready before it
// was ever in step), but not those fetched within the lease.
func TestLease(t *testing.T) {
	const lease = 200 * time.Millisecond
	ms := cluster(t, 2, lease)
	a, b := ms[0], ms[1]
	eventually(t, "in step", func() bool { return a.svc.Current() && a.svc.Ready() })
	b.stop()
	eventually(t, "out of step", func() bool { return !a.svc.Current() })
	now := time.Now()
	if !a.svc.Suspect(now.Add(-time.Minute), now) {
		t.Error("an object older than the lease is not suspect while out of step")
	}
	if a.svc.Suspect(now.Add(-lease/4), now) {
		t.Error("an object fetched within the lease is suspect")
	}
	if !a.svc.Ready() {
		t.Error("a member that was in step once became not ready")
	}
}

// A member alone after a graceful leave stays in step; one alone after a
// failure does not.
func TestAlone(t *testing.T) {
	ms := cluster(t, 1, 100*time.Millisecond)
	a := ms[0]
	if !a.svc.Current() {
		t.Fatal("a member alone is out of step")
	}
	v := a.svc.cfg.Mesh.(*view)
	v.failures.Add(1)
	eventually(t, "out of step a lease after the failure", func() bool { return !a.svc.Current() })
}

// Issue applies a purge on every member with a receipt each; a member that
// does not answer is named, with what it will do, and the answer waits for
// its lease; Status tells who has applied it.
func TestIssueAndStatus(t *testing.T) {
	const lease = 300 * time.Millisecond
	ms := cluster(t, 3, lease)
	for _, m := range ms {
		put(m, "h/x", time.Now().Add(-time.Minute))
	}
	id, receipts := ms[0].svc.Issue(t.Context(), []string{"h/x"}, nil, nil, false)
	if len(receipts) != 3 {
		t.Fatalf("receipts %v", receipts)
	}
	for i, r := range receipts {
		if !r.Applied || r.Removed != 1 || held(ms[i], "h/x") {
			t.Errorf("receipt %+v; %s holds h/x: %v", r, ms[i].name, held(ms[i], "h/x"))
		}
	}
	ms[2].stop()
	v := ms[0].svc.cfg.Mesh.(*view)
	v.mu.Lock()
	v.failed = []Failure{{Name: "z", At: time.Now()}}
	v.mu.Unlock()
	start := time.Now()
	id2, receipts := ms[0].svc.Issue(t.Context(), nil, []string{"h/"}, nil, false)
	if took := time.Since(start); took < lease {
		t.Errorf("answered after %v with a member down; want at least the lease %v", took, lease)
	}
	if len(receipts) != 4 || receipts[2].Applied || !strings.Contains(receipts[2].Error, "applies the purge from the others' logs") ||
		receipts[3].Node != "z" || !strings.HasPrefix(receipts[3].Error, "failed at ") {
		t.Errorf("receipts with c down and z failed: %+v", receipts)
	}
	st := ms[0].svc.Status(t.Context(), id2)
	if !st[0].Applied || !st[1].Applied || st[2].Applied || st[2].Error == "" {
		t.Errorf("status %+v", st)
	}
	if st := ms[1].svc.Status(t.Context(), id); !st[0].Applied || !st[1].Applied {
		t.Errorf("status of the first purge %+v", st)
	}
}

// A fill that started before a purge sees the generation change.
func TestGeneration(t *testing.T) {
	s := New(Config{Self: "a", Store: cache.NewMemory(1 << 20)})
	g := s.Gen()
	s.Apply(&peerv1.PurgeRequest{Id: "p", Keys: []string{"k"}, Issued: timestamppb.Now()})
	if s.Gen() == g {
		t.Error("a purge left the generation unchanged")
	}
	g = s.Gen()
	if s.Apply(&peerv1.PurgeRequest{Id: "p", Keys: []string{"k"}}) != 0 || s.Gen() != g {
		t.Error("a purge applied twice")
	}
}
