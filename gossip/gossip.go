// Package gossip is cluster membership over hashicorp/memberlist: each node
// advertises its metadata (HTTP, peer and admin addresses, region, weight,
// version), learns the others', and signals every change so the caller can
// rebuild its ring. Seeds may be DNS names that resolve to many addresses
// (docker compose --scale, a Kubernetes headless service); joining retries in
// the background until it succeeds, so nodes may start in any order.
//
// gossip knows nothing of the ring, HTTP or gRPC.
package gossip

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Meta is what a node advertises to the others.
type Meta struct {
	HTTPAddr  string `json:"h,omitempty"`
	PeerAddr  string `json:"p,omitempty"`
	AdminAddr string `json:"a,omitempty"`
	Region    string `json:"r,omitempty"`
	Weight    int    `json:"w,omitempty"`
	Version   string `json:"v,omitempty"`
	// Started is when the node joined (Unix milliseconds), so a node can
	// tell which members were there before it.
	Started int64 `json:"s,omitempty"`
	// Leaving is set by Leave just before the node announces it, so the others
	// can tell a graceful leave from a failure.
	Leaving bool `json:"l,omitempty"`
	// Draining is set by Drain: the node owns no keys any more but still
	// answers, so the others can take its objects over from it.
	Draining bool `json:"d,omitempty"`
	// Ready is set while the node takes client traffic (its /readyz), and
	// Load is its client requests in flight: for whoever sends it users.
	Ready bool `json:"ok,omitempty"`
	Load  int  `json:"ld,omitempty"`
	// Router marks a member that sends users to edges and owns nothing: it
	// is in no ring and is asked for nothing.
	Router bool `json:"rt,omitempty"`
}

// metaV1 leads the encoded metadata, so the format can change later.
const metaV1 byte = 1

func (m Meta) encode() ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	out := append([]byte{metaV1}, b...)
	if len(out) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("gossip: node metadata is %d bytes, memberlist allows %d", len(out), memberlist.MetaMaxSize)
	}
	return out, nil
}

func decodeMeta(b []byte) (Meta, error) {
	var m Meta
	if len(b) == 0 || b[0] != metaV1 {
		return m, errors.New("gossip: unknown metadata version")
	}
	err := json.Unmarshal(b[1:], &m)
	return m, err
}

// Member is one node of the cluster as gossip knows it.
type Member struct {
	Name string
	Addr string // gossip address
	Meta Meta
}

// Failure is a member that went away without leaving: it crashed, stopped or
// was cut off.
type Failure struct {
	Name string
	At   time.Time
}

// How long a leaving node lets its leaving flag spread before it announces
// the leave itself: LAN timings, and the Fast profile's.
const (
	leavePropagation     = time.Second
	fastLeavePropagation = 250 * time.Millisecond
)

// failedRetention is how long a failed member is remembered unless it comes
// back.
const failedRetention = time.Hour

// Config configures membership. Zero fields take their defaults.
type Config struct {
	// Name identifies the node; unique in the cluster. Required.
	Name string
	// BindAddr is the gossip listener (TCP and UDP), host:port. Port 0 picks a
	// free one. Default ":7946".
	BindAddr string
	// AdvertiseAddr is the address others reach this node at, when it differs
	// from BindAddr (NAT, containers). Default: derived from BindAddr.
	AdvertiseAddr string
	// Join lists seeds: host:port, or a DNS name:port whose every address is
	// tried. The node keeps trying in the background until it joins, and again
	// whenever it finds itself alone.
	Join []string
	// Keys, when set (each 16, 24 or 32 bytes), encrypt gossip. The first
	// encrypts what this node sends; every one of them decrypts what it
	// receives, so a key can be rotated by rolling restarts: add the new key
	// after the old one everywhere, then put it first everywhere, then drop
	// the old one. A node without a key neither joins nor understands them.
	Keys [][]byte
	// Meta is advertised to the others.
	Meta Meta
	// PushPull, when set, is how often the node exchanges its whole view of
	// the cluster with a random member (memberlist's default: 30 s, LAN).
	// Updates also spread by gossip; a full exchange mends what gossip lost,
	// such as a member's metadata sent mostly to members that had died.
	PushPull time.Duration
	// Fast uses timings for tests on loopback (failures detected in about
	// a second and a half) instead of memberlist's LAN defaults.
	Fast bool
	// Logger receives memberlist's log lines at their level. Nil discards them.
	Logger *slog.Logger
}

// Gossip is a running membership. Its methods are safe for concurrent use.
type Gossip struct {
	cfg     Config
	meta    *delegate
	log     *slog.Logger
	ml      *memberlist.Memberlist
	logw    *levelWriter // memberlist's log, closed by Shutdown
	addr    string       // the advertised gossip address, set by Start
	changed chan struct{}

	mu       sync.Mutex
	members  map[string]Member
	failed   map[string]time.Time // members gone without a leave, and when
	gone     map[string]time.Time // members gone, with or without a leave, and when
	leaving  map[string]time.Time // members that told us directly they leave, and when
	failures atomic.Uint64        // failures seen since Start

	joinTried atomic.Bool // the first attempt to join the seeds has ended

	cancel    context.CancelFunc
	wg        sync.WaitGroup
	lifecycle sync.Mutex // Leave and Shutdown do not overlap (memberlist panics)
	stopOnce  sync.Once
	stopped   atomic.Bool
	left      atomic.Bool // after Leave, the join loop stays quiet
}

var (
	_ memberlist.Delegate      = (*delegate)(nil)
	_ memberlist.EventDelegate = (*Gossip)(nil)
)

// New validates cfg. It opens no socket.
func New(cfg Config) (*Gossip, error) {
	if cfg.Name == "" {
		return nil, errors.New("gossip: a node name is required")
	}
	if cfg.BindAddr == "" {
		cfg.BindAddr = ":7946"
	}
	if _, _, err := splitPort(cfg.BindAddr); err != nil {
		return nil, fmt.Errorf("gossip: bind address: %w", err)
	}
	if cfg.AdvertiseAddr != "" {
		if _, _, err := splitPort(cfg.AdvertiseAddr); err != nil {
			return nil, fmt.Errorf("gossip: advertise address: %w", err)
		}
	}
	for i, k := range cfg.Keys {
		if n := len(k); n != 16 && n != 24 && n != 32 {
			return nil, fmt.Errorf("gossip: key %d is %d bytes; want 16, 24 or 32", i+1, n)
		}
	}
	for _, s := range cfg.Join {
		if _, _, err := net.SplitHostPort(s); err != nil {
			return nil, fmt.Errorf("gossip: seed %q: want host:port", s)
		}
	}
	meta, err := cfg.Meta.encode()
	if err != nil {
		return nil, err
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	g := &Gossip{cfg: cfg, meta: &delegate{}, log: lg, changed: make(chan struct{}, 1),
		members: map[string]Member{}, failed: map[string]time.Time{}, leaving: map[string]time.Time{}, gone: map[string]time.Time{}}
	g.meta.meta.Store(&meta)
	g.meta.onMsg = g.notifyMsg
	if len(cfg.Join) == 0 {
		g.joinTried.Store(true)
	}
	return g, nil
}

func splitPort(addr string) (string, int, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return "", 0, fmt.Errorf("bad port in %q", addr)
	}
	return host, p, nil
}

// Start binds the gossip sockets and starts joining the seeds in the background.
func (g *Gossip) Start(ctx context.Context) error {
	mc := memberlist.DefaultLANConfig()
	if g.cfg.PushPull > 0 {
		mc.PushPullInterval = g.cfg.PushPull
	}
	if g.cfg.Fast {
		mc = memberlist.DefaultLocalConfig()
		// Probes wait 200 ms for an ack and suspicions last about a
		// second (two without another member to confirm them): a member
		// starved of CPU for a moment (the race detector on two busy
		// cores) is not taken for dead.
		mc.ProbeInterval = 300 * time.Millisecond
		mc.ProbeTimeout = 200 * time.Millisecond
		mc.GossipInterval = 20 * time.Millisecond
		mc.SuspicionMult = 3
		mc.SuspicionMaxTimeoutMult = 2
		mc.PushPullInterval = 2 * time.Second
		mc.TCPTimeout = 2 * time.Second // a starved receiver reads a leave notice within it
		mc.GossipToTheDeadTime = 2 * time.Second
	}
	mc.Name = g.cfg.Name
	host, port, _ := splitPort(g.cfg.BindAddr)
	if host == "" {
		host = "0.0.0.0"
	}
	mc.BindAddr, mc.BindPort = host, port
	if g.cfg.AdvertiseAddr != "" {
		mc.AdvertiseAddr, mc.AdvertisePort, _ = splitPort(g.cfg.AdvertiseAddr)
	}
	if len(g.cfg.Keys) > 0 {
		kr, err := memberlist.NewKeyring(g.cfg.Keys, g.cfg.Keys[0])
		if err != nil {
			return fmt.Errorf("gossip: keys: %w", err)
		}
		mc.Keyring = kr
	}
	mc.Delegate = g.meta
	mc.Events = g
	g.logw = &levelWriter{l: g.log}
	mc.Logger = log.New(g.logw, "", 0)
	mc.LogOutput = nil
	ml, err := memberlist.Create(mc)
	if err != nil {
		return fmt.Errorf("gossip: %w", err)
	}
	g.ml = ml
	// Read once, before anything else runs: memberlist's LocalNode points at
	// the node's live state, which UpdateNode (Leave, Drain) rewrites.
	n := ml.LocalNode()
	g.addr = net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
	lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	g.cancel = cancel
	if len(g.cfg.Join) > 0 {
		g.wg.Go(func() { g.joinLoop(lctx) })
	}
	return nil
}

// Addr is the gossip address others reach this node at.
func (g *Gossip) Addr() string { return g.addr }

// joinLoop joins the seeds, retrying with back-off, and rejoins whenever the
// node is alone (a partition healed, a cluster restarted).
func (g *Gossip) joinLoop(ctx context.Context) {
	backoff := 200 * time.Millisecond
	if !g.cfg.Fast {
		backoff = time.Second
	}
	wait := time.Duration(0)
	failures := 0 // attempts in a row that found seeds and joined none
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if g.ml.NumMembers() > 1 || g.left.Load() {
			wait, failures = 5*backoff, 0
			continue
		}
		addrs, problems := g.resolveSeeds(ctx)
		joined := false
		if len(addrs) > 0 {
			n, err := g.ml.Join(addrs)
			if joined = n > 0; joined {
				g.log.Info("joined the cluster", "contacted", n, "members", g.ml.NumMembers())
				failures = 0
				g.meetEveryone(ctx, addrs)
			} else if err != nil {
				problems = append(problems, err)
			}
		}
		if !joined && len(problems) > 0 {
			// Seeds that do not resolve or answer: said at once, then at
			// the 2nd, 4th, 8th... attempt in a row (the attempts back off
			// too). A seed that resolves only to this node (the first
			// replica of a service) is no problem.
			if failures++; failures&(failures-1) == 0 {
				g.log.Warn("cannot join the cluster yet; retrying", "seeds", g.cfg.Join, "attempts", failures,
					"err", errors.Join(problems...))
			}
		}
		if !g.joinTried.Swap(true) {
			g.poke() // the caller may wait for the first attempt
		}
		if joined {
			wait = 5 * backoff
			continue
		}
		wait = min(max(wait*2, backoff), 30*backoff)
	}
}

// meetEveryone exchanges state once with every member the seeds (at
// contacted) did not stand for. A node that comes back under its name
// starts a new life at incarnation 0, and a member that has not yet
// forgotten the old life's leave holds it above that: it ignores the new
// life, and its next exchange with a member that took the new life would
// have that member drop this node again for a moment (its keys someone
// else's, a drain's offers sent elsewhere). Met now, each such record is
// refuted at once, before this node reports ready.
//
// The exchanges run meetAtOnce at a time, so members that died a moment
// ago (each holds an exchange for memberlist's TCP timeout) delay the
// join, and a Shutdown meanwhile, by that timeout a few times at most, not
// once each; a Shutdown stops what has not started.
func (g *Gossip) meetEveryone(ctx context.Context, contacted []string) {
	seen := map[string]bool{g.addr: true}
	for _, a := range contacted {
		seen[a] = true
	}
	var others []string
	for _, m := range g.Members() { // a copy: memberlist's own nodes change under Leave
		if m.Name != g.cfg.Name && !seen[m.Addr] {
			seen[m.Addr] = true
			others = append(others, m.Addr)
		}
	}
	slots := make(chan struct{}, meetAtOnce)
	var wg sync.WaitGroup
	for _, a := range others {
		select {
		case <-ctx.Done():
		case slots <- struct{}{}:
			wg.Go(func() {
				defer func() { <-slots }()
				if _, err := g.ml.Join([]string{a}); err != nil {
					g.log.Debug("meeting a member after the join", "member", a, "err", err)
				}
			})
			continue
		}
		break
	}
	wg.Wait()
}

// meetAtOnce bounds the state exchanges meetEveryone runs at once.
const meetAtOnce = 16

// resolveSeeds turns seeds into addresses, every address of a DNS name, without
// this node's own; problems are the seeds that do not resolve.
func (g *Gossip) resolveSeeds(ctx context.Context) (out []string, problems []error) {
	self := g.Addr()
	for _, s := range g.cfg.Join {
		host, port, _ := net.SplitHostPort(s)
		ips := []string{host}
		if net.ParseIP(host) == nil {
			rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			found, err := net.DefaultResolver.LookupHost(rctx, host)
			cancel()
			if err != nil {
				problems = append(problems, fmt.Errorf("seed %s: %w", s, err))
				continue
			}
			ips = found
		}
		for _, ip := range ips {
			if a := net.JoinHostPort(ip, port); a != self && !slices.Contains(out, a) {
				out = append(out, a)
			}
		}
	}
	return out, problems
}

// Members returns the live members, this node included, sorted by name.
func (g *Gossip) Members() []Member {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]Member, 0, len(g.members))
	for _, m := range g.members {
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Has reports whether name is a live member (alive or suspect; not left,
// failed or never seen), this node included, or one that went away (left
// or failed) less than within ago: a member taken for dead by a stale or
// false report is back before that, and what it sends meanwhile is its own.
func (g *Gossip) Has(name string, within time.Duration) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.members[name]; ok {
		return true
	}
	at, ok := g.gone[name]
	return ok && time.Since(at) < within
}

// JoinTried reports whether the first attempt to join the seeds has ended,
// successful or not; true at once without seeds. Changed is signalled when
// it becomes true.
func (g *Gossip) JoinTried() bool { return g.joinTried.Load() }

// Failures counts the members that went away without leaving since Start.
func (g *Gossip) Failures() uint64 { return g.failures.Load() }

// Failed returns the members that went away without leaving within the last
// hour and have not come back, sorted by name.
func (g *Gossip) Failed() []Failure {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []Failure
	for name, at := range g.failed {
		if time.Since(at) > failedRetention {
			delete(g.failed, name)
			continue
		}
		out = append(out, Failure{Name: name, At: at})
	}
	slices.SortFunc(out, func(a, b Failure) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Changed is signalled (without blocking, coalescing bursts) whenever the
// member set or a member's metadata changes.
func (g *Gossip) Changed() <-chan struct{} { return g.changed }

// Leave announces that this node is leaving, waiting up to timeout for the
// message to spread. Shutdown must follow.
func (g *Gossip) Leave(timeout time.Duration) error {
	g.lifecycle.Lock()
	defer g.lifecycle.Unlock()
	if g.ml == nil || g.stopped.Load() {
		return errors.New("gossip: leave after shutdown") // memberlist would panic
	}
	if g.left.Swap(true) {
		return nil // already announced
	}
	// Best effort: without it the others count a failure, not a leave.
	// The flag travels in gossip, where the leave's own message may
	// overtake it (and replace it in memberlist's queue), so each member
	// is also told directly, over TCP.
	g.tellLeaving(timeout)
	if err := g.updateMeta(timeout, func(m *Meta) { m.Leaving = true }); err != nil {
		g.log.Debug("leaving flag not spread", "err", err)
	} else if g.ml.NumMembers() > 1 {
		// memberlist counts the update sent once it went out a few times,
		// possibly all to the same member: the others get it relayed. Let
		// it spread before the leave, which would otherwise overtake it
		// and be taken for a failure (Serf's leave propagation delay).
		p := leavePropagation
		if g.cfg.Fast {
			p = fastLeavePropagation
		}
		time.Sleep(min(p, timeout))
	}
	return g.ml.Leave(timeout)
}

// leaveNotice starts the message a leaving node sends each member.
var leaveNotice = []byte("meshcdn-leaving:")

// leaveRetryPause separates two attempts to send a leave notice.
const leaveRetryPause = 50 * time.Millisecond

// tellLeaving sends each member a leave notice over TCP, concurrently,
// within timeout. The caller holds g.lifecycle.
func (g *Gossip) tellLeaving(timeout time.Duration) {
	g.mu.Lock()
	var to []*memberlist.Node
	for name, m := range g.members {
		host, port, err := net.SplitHostPort(m.Addr)
		p, perr := strconv.Atoi(port)
		if name == g.cfg.Name || err != nil || perr != nil {
			continue
		}
		// Our own copy: memberlist's nodes change under its lock.
		to = append(to, &memberlist.Node{Name: name, Addr: net.ParseIP(host), Port: uint16(p)})
	}
	g.mu.Unlock()
	msg := append(slices.Clone(leaveNotice), g.cfg.Name...)
	sent := make(chan struct{}, len(to))
	until := time.Now().Add(timeout)
	for _, n := range to {
		// Owned by g (Shutdown waits): each ends by until, or within
		// memberlist's TCP timeout after it. A send that fails (a member
		// too busy to take the connection in time) is tried again while
		// the time allows.
		g.wg.Go(func() {
			defer func() { sent <- struct{}{} }()
			for {
				err := g.ml.SendReliable(n, msg)
				if err == nil {
					return
				}
				if time.Until(until) < leaveRetryPause {
					g.log.Debug("leave notice not sent", "member", n.Name, "err", err)
					return
				}
				time.Sleep(leaveRetryPause)
			}
		})
	}
	deadline := time.After(timeout)
	for range to {
		select {
		case <-sent:
		case <-deadline:
			return
		}
	}
}

// notifyMsg takes a member's direct message: a leave notice marks it as
// leaving, so its departure is not counted as a failure.
func (g *Gossip) notifyMsg(b []byte) {
	name, ok := bytes.CutPrefix(b, leaveNotice)
	if !ok || len(name) == 0 || len(name) > 256 {
		return
	}
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	for n, at := range g.leaving {
		if now.Sub(at) > time.Minute {
			delete(g.leaving, n)
		}
	}
	g.leaving[string(name)] = now
}

// Drain announces that this node owns no keys any more while it stays a
// member, waiting up to timeout for the update to spread.
func (g *Gossip) Drain(timeout time.Duration) error {
	g.lifecycle.Lock()
	defer g.lifecycle.Unlock()
	if g.ml == nil || g.stopped.Load() || g.left.Load() {
		return errors.New("gossip: drain after leaving") // memberlist would panic
	}
	return g.updateMeta(timeout, func(m *Meta) { m.Draining = true })
}

// SetStatus advertises whether this node takes client traffic and its
// requests in flight, waiting up to timeout for the update to spread.
func (g *Gossip) SetStatus(ready bool, load int, timeout time.Duration) error {
	g.lifecycle.Lock()
	defer g.lifecycle.Unlock()
	if g.ml == nil || g.stopped.Load() || g.left.Load() {
		// memberlist no longer knows this node after a leave: it would panic.
		return errors.New("gossip: status after leaving")
	}
	return g.updateMeta(timeout, func(m *Meta) { m.Ready, m.Load = ready, load })
}

// updateMeta changes this node's metadata and spreads it, waiting up to
// timeout. The caller holds g.lifecycle.
func (g *Gossip) updateMeta(timeout time.Duration, change func(*Meta)) error {
	m, err := decodeMeta(*g.meta.meta.Load())
	if err != nil {
		return err
	}
	change(&m)
	b, err := m.encode()
	if err != nil {
		return err
	}
	g.meta.meta.Store(&b)
	start := time.Now()
	if err := g.ml.UpdateNode(timeout); err != nil {
		if timeout > 0 && time.Since(start) >= timeout {
			return fmt.Errorf("%w within %v", ErrNotSpread, timeout) // only the wait ended
		}
		return fmt.Errorf("gossip: spreading metadata: %w", err)
	}
	return nil
}

// ErrNotSpread reports a metadata update that memberlist had not sent to
// enough members when the wait for it ended: it stays queued and spreads
// by gossip, and in the next full exchange at the latest.
var ErrNotSpread = errors.New("gossip: metadata update queued but not yet spread")

// Shutdown stops the join loop and closes the sockets, without announcing
// anything (call Leave first for a graceful exit); a Leave in progress ends
// first. It may be called more than once.
func (g *Gossip) Shutdown() error {
	g.lifecycle.Lock()
	defer g.lifecycle.Unlock()
	var err error
	g.stopOnce.Do(func() {
		g.stopped.Store(true)
		if g.cancel != nil {
			g.cancel()
		}
		g.wg.Wait()
		if g.ml != nil {
			err = g.ml.Shutdown()
			// memberlist's Shutdown does not wait for its goroutines: a
			// probe under way may still log. Nothing is logged after
			// Shutdown returns.
			g.logw.close()
		}
	})
	return err
}

// NotifyJoin implements memberlist.EventDelegate. It must not block.
func (g *Gossip) NotifyJoin(n *memberlist.Node) { g.put(n) }

// NotifyUpdate implements memberlist.EventDelegate.
func (g *Gossip) NotifyUpdate(n *memberlist.Node) { g.put(n) }

// NotifyLeave implements memberlist.EventDelegate.
func (g *Gossip) NotifyLeave(n *memberlist.Node) {
	g.mu.Lock()
	if m, ok := g.members[n.Name]; ok && !m.Meta.Leaving && g.leaving[n.Name].IsZero() {
		g.failed[n.Name] = time.Now()
		g.failures.Add(1)
	}
	delete(g.members, n.Name)
	now := time.Now()
	g.gone[n.Name] = now
	for name, at := range g.gone {
		if now.Sub(at) > time.Hour {
			delete(g.gone, name) // bounded: only recent departures matter
		}
	}
	g.mu.Unlock()
	g.poke()
}

func (g *Gossip) put(n *memberlist.Node) {
	meta, err := decodeMeta(n.Meta)
	if err != nil {
		g.log.Warn("ignoring a member with unreadable metadata", "member", n.Name, "err", err)
		return
	}
	m := Member{Name: n.Name, Addr: net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port))), Meta: meta}
	g.mu.Lock()
	g.members[n.Name] = m
	delete(g.failed, n.Name)
	delete(g.gone, n.Name)
	g.mu.Unlock()
	g.poke()
}

func (g *Gossip) poke() {
	select {
	case g.changed <- struct{}{}:
	default: // a change is already pending
	}
}

// delegate serves the node's metadata and passes members' direct messages
// on; memberlist's other delegate hooks are unused.
type delegate struct {
	meta  atomic.Pointer[[]byte]
	onMsg func([]byte) // set before memberlist starts
}

func (d *delegate) NodeMeta(int) []byte           { return *d.meta.Load() }
func (d *delegate) NotifyMsg(b []byte)            { d.onMsg(b) }
func (*delegate) GetBroadcasts(int, int) [][]byte { return nil }
func (*delegate) LocalState(bool) []byte          { return nil }
func (*delegate) MergeRemoteState([]byte, bool)   {}

// levelWriter sends memberlist's "[ERR] memberlist: ..." lines to slog at the
// matching level, until it is closed.
type levelWriter struct {
	l      *slog.Logger
	mu     sync.RWMutex // held to write; close waits for writes under way
	closed bool
}

// close drops every line from now on, once the lines being written are.
func (w *levelWriter) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
}

func (w *levelWriter) Write(p []byte) (int, error) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		return len(p), nil
	}
	msg, lvl := strings.TrimSpace(string(p)), slog.LevelDebug
	switch {
	case strings.Contains(msg, "use of closed network connection"):
		lvl = slog.LevelDebug // the sockets closing at shutdown
	case strings.HasPrefix(msg, "[ERR]"):
		lvl = slog.LevelError
	case strings.HasPrefix(msg, "[WARN]"):
		lvl = slog.LevelWarn
	case strings.HasPrefix(msg, "[INFO]"):
		lvl = slog.LevelInfo
	}
	w.l.Log(context.Background(), lvl, msg, "component", "memberlist")
	return len(p), nil
}

var _ io.Writer = (*levelWriter)(nil)
