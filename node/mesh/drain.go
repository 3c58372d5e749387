package mesh

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshcdn/meshcdn/node/peer"
	peerv1 "github.com/meshcdn/meshcdn/proto/meshcdn/peer/v1"
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
		if err := m.gossip.Drain(m.cfg.LeaveTimeout); err != nil {
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
// them before. It returns how the offers went once every one has an answer
// or ctx ends.
func (m *Mesh) offerHottest(ctx context.Context) peer.HandOff {
	start := time.Now()
	var taken, failed atomic.Int64
	sem := make(chan struct{}, handOffParallel)
	var wg sync.WaitGroup
	report := func() peer.HandOff { // once every offer has its answer
		wg.Wait()
		return peer.HandOff{Taken: taken.Load(), NotTaken: failed.Load(), Took: time.Since(start)}
	}
	for _, o := range m.offers() {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return report()
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if m.offer(ctx, o.name, o.addr, o.req) {
				taken.Add(1)
			} else {
				failed.Add(1)
			}
		})
	}
	h := report()
	m.log.Info("handed objects off to their new owners", "taken", h.Taken, "not_taken", h.NotTaken,
		"took", h.Took.Round(time.Millisecond))
	return h
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
		host, pathQuery, found := strings.Cut(key, "/")
		if !ok || !found || host == "" {
			continue // this node still owns it (it is alone), or not a request key
		}
		for _, e := range obj.Variants {
			if e.Body == nil || !e.Fresh(time.Now()) {
				continue // a fill in progress, or not worth a revalidation at the new owner
			}
			out = append(out, anOffer{name: name, addr: addr, req: &peerv1.FetchRequest{Key: key, Host: host,
				PathQuery: "/" + pathQuery, From: m.self.Name, Epoch: m.epoch.Load(), TakeOver: true,
				Headers: varyFields(e.VaryKey)}})
		}
	}
	return out
}

// offer sends one take-over request and reports whether the owner took the
// response.
func (m *Mesh) offer(ctx context.Context, name, addr string, req *peerv1.FetchRequest) bool {
	resp, err := m.peers.Fetch(ctx, addr, req)
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil && (resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusGatewayTimeout) {
			err = errNotTaken
		}
	}
	if err != nil {
		m.declined.Add(1)
		m.log.Debug("hand-off not taken", "peer", name, "key", req.GetKey(), "err", err)
		return false
	}
	m.offered.Add(1)
	return true
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
