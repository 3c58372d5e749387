package mesh

import (
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshcdn/meshcdn/gossip"
	"github.com/meshcdn/meshcdn/node/peer"
	"github.com/meshcdn/meshcdn/node/slice"
	peerv1 "github.com/meshcdn/meshcdn/proto/meshcdn/peer/v1"
	"github.com/meshcdn/meshcdn/ring"
)

const (
	// handOffLimit bounds how many of its hottest keys a draining node offers
	// to their new owners.
	handOffLimit = 10000
	// handOffParallel is how many offers are in flight at once.
	handOffParallel = 8
)

// Drain takes this node out of the ring: it stops owning keys and tells the
// others in the background, then, with offers, offers its hottest objects to
// their new owners. It stays a member until it stops, answering clients (as
// a non-owner) and the new owners of its keys, which take its objects over
// from it instead of the origin. It reports false when the node drains
// already.
func (m *Mesh) Drain(offers bool) bool {
	if m.draining.Swap(true) {
		return false
	}
	m.log.Info("draining: leaving the ring; still answering until stopped")
	m.Rebuild()
	// Announce in the background: the caller's answer must not wait for the
	// update to spread.
	m.wg.Go(func() {
		switch err := m.gossip.Drain(m.cfg.LeaveTimeout); {
		case errors.Is(err, gossip.ErrNotSpread):
			m.log.Info("draining: announced, still spreading", "waited", m.cfg.LeaveTimeout)
		case err != nil:
			m.log.Warn("draining: not announced", "err", err)
		}
		if offers {
			m.handOff = m.offerHottest(m.ctx)
		}
		close(m.handedOff)
	})
	return true
}

// Draining reports whether this node drains.
func (m *Mesh) Draining() bool { return m.draining.Load() }

// ErrNotDraining is HandOffDone's answer on a node that does not drain.
var ErrNotDraining = errors.New("mesh: not draining")

// HandOffDone waits until this draining node has offered its hottest
// objects to their new owners, or ctx ends, and tells how the offers went.
func (m *Mesh) HandOffDone(ctx context.Context) (peer.HandOff, error) {
	if !m.draining.Load() {
		return peer.HandOff{}, ErrNotDraining
	}
	select {
	case <-m.handedOff:
		return m.handOff, nil
	case <-ctx.Done():
		return peer.HandOff{}, context.Cause(ctx)
	}
}

// HandedOff counts the offers of a draining node that the new owners took
// and those they did not.
func (m *Mesh) HandedOff() (taken, notTaken uint64) { return m.offered.Load(), m.declined.Load() }

// offerHottest offers the hottest objects of the memory tier to their new
// owners, which take them from this node's cache (FetchRequest.take_over),
// so they stay in the cluster when this node goes, even if nobody asks for
// them before. A member that drains too refuses what it is offered, since it
// would leave with it; those objects go to their owners among the members
// that stay, which this node may not have heard of yet (two members drained
// together). It returns how the offers went once every one has an answer or
// ctx ends.
func (m *Mesh) offerHottest(ctx context.Context) peer.HandOff {
	start := time.Now()
	var taken, notTaken int64
	offers := m.offers()
	var draining []string // members that refused offers because they drain
	for round := 1; len(offers) > 0; round++ {
		t, n, refused := m.offerAll(ctx, offers)
		taken, notTaken = taken+t, notTaken+n
		if len(refused) == 0 {
			break
		}
		for _, o := range refused {
			if !slices.Contains(draining, o.name) {
				draining = append(draining, o.name)
			}
		}
		if round == maxOfferRounds || ctx.Err() != nil {
			notTaken += int64(len(refused))
			m.declined.Add(uint64(len(refused)))
			break
		}
		var lost int
		offers, lost = m.reroute(refused, draining)
		notTaken += int64(lost)
		m.declined.Add(uint64(lost))
	}
	h := peer.HandOff{Taken: taken, NotTaken: notTaken, Took: time.Since(start)}
	m.log.Info("handed objects off to their new owners", "taken", h.Taken, "not_taken", h.NotTaken,
		"took", h.Took.Round(time.Millisecond), "draining_too", draining)
	return h
}

// maxOfferRounds bounds how many times a drain offers objects again after
// members refused them because they drain too.
const maxOfferRounds = 3

// offerAll sends offers, handOffParallel at a time, and returns how many
// were taken and not taken (counted as they are answered), and those
// refused by a member that drains. It returns once every offer sent has its
// answer; those not sent before ctx ended count as not taken.
func (m *Mesh) offerAll(ctx context.Context, offers []anOffer) (taken, notTaken int64, refused []anOffer) {
	var took, failed atomic.Int64
	var mu sync.Mutex
	sem := make(chan struct{}, handOffParallel)
	var wg sync.WaitGroup
	for i, o := range offers {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			m.declined.Add(uint64(len(offers) - i))
			return took.Load(), failed.Load() + int64(len(offers)-i), refused
		}
		wg.Go(func() {
			defer func() { <-sem }()
			switch err := m.offer(ctx, o); {
			case err == nil:
				took.Add(1)
				m.offered.Add(1)
			case peer.IsDraining(err):
				mu.Lock()
				refused = append(refused, o)
				mu.Unlock()
			default:
				failed.Add(1)
				m.declined.Add(1)
				m.log.Debug("hand-off not taken", "peer", o.name, "key", o.req.GetKey(), "err", err)
			}
		})
	}
	wg.Wait()
	return took.Load(), failed.Load(), refused
}

// reroute points offers at the keys' owners on this node's ring without the
// members in draining, and tells how many have no owner left.
func (m *Mesh) reroute(offers []anOffer, draining []string) ([]anOffer, int) {
	names := slices.DeleteFunc(m.Ring().Members(), func(name string) bool {
		return name == m.self.Name || slices.Contains(draining, name)
	})
	if len(names) == 0 {
		return nil, len(offers)
	}
	r, err := ring.New(names, m.cfg.Ring)
	if err != nil {
		m.log.Warn("hand-off: no ring without the members that drain", "err", err)
		return nil, len(offers)
	}
	addrs := *m.addrs.Load()
	var out []anOffer
	for _, o := range offers {
		name, _ := r.Owner(o.req.GetKey())
		if addrs[name] == "" {
			continue
		}
		o.name, o.addr = name, addrs[name]
		out = append(out, o)
	}
	return out, len(offers) - len(out)
}

// anOffer is one take-over request and the member it goes to.
type anOffer struct {
	name, addr string
	req        *peerv1.FetchRequest
}

// offers lists the take-over requests for the fresh variants of the hottest
// keys another member owns now.
func (m *Mesh) offers() []anOffer {
	var out []anOffer
	for _, key := range m.self.Store.Hottest(handOffLimit) {
		obj, ok := m.self.Store.Get(key)
		if !ok || obj.Pass(time.Now()) {
			continue
		}
		name, addr, ok := m.Owner(key)
		object, spec, sliced := slice.FromKey(key)
		if !sliced {
			object = key
		}
		host, pathQuery, found := strings.Cut(object, "/")
		if !ok || !found || host == "" {
			continue // this node still owns it (it is alone), or not a request key
		}
		for _, e := range obj.Variants {
			if !e.HasBody() || !e.Fresh(time.Now()) {
				continue // a fill in progress, or not worth a revalidation at the new owner
			}
			req := &peerv1.FetchRequest{Key: key, Host: host, PathQuery: "/" + pathQuery, From: m.self.Name,
				Epoch: m.epoch.Load(), TakeOver: true, Headers: varyFields(e.VaryKey)}
			if sliced {
				req.Slice = &peerv1.Slice{Size: spec.Size, Index: spec.Index}
			}
			out = append(out, anOffer{name: name, addr: addr, req: req})
		}
	}
	return out
}

// offer sends one take-over request; nil means the owner took the
// response.
func (m *Mesh) offer(ctx context.Context, o anOffer) error {
	resp, err := m.peers.Fetch(ctx, o.addr, o.req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusGatewayTimeout {
		return errNotTaken
	}
	return nil
}

// errNotTaken is an offer the new owner answered with an edge error.
var errNotTaken = errors.New("the new owner did not take the response")

// varyFields turns a secondary key (httpcache.SecondaryKey: "Name=value"
// lines) back into the request fields that select the same variant.
func varyFields(varyKey string) []*peerv1.HeaderField {
	var out []*peerv1.HeaderField
	for line := range strings.Lines(varyKey) {
		if name, value, ok := strings.Cut(strings.TrimSuffix(line, "\n"), "="); ok && name != "" && value != "" {
			out = append(out, &peerv1.HeaderField{Name: name, Values: []string{value}})
		}
	}
	return out
}
