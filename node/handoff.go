package node

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

// handOff offers the hottest objects of this node's memory tier to their new
// owners, which take them from this node's cache (FetchRequest.take_over), so
// they stay in the cluster when this node goes, even if nobody asks for them
// before. It returns how the offers went once every one has an answer or
// ctx ends.
func (n *Node) handOff(ctx context.Context) peer.HandOff {
	start := time.Now()
	var taken, failed atomic.Int64
	sem := make(chan struct{}, handOffParallel)
	var wg sync.WaitGroup
	report := func() peer.HandOff { // once every offer has its answer
		wg.Wait()
		return peer.HandOff{Taken: taken.Load(), NotTaken: failed.Load(), Took: time.Since(start)}
	}
	for _, key := range n.store.Hottest(handOffLimit) {
		obj, ok := n.store.Get(key)
		if !ok || obj.Pass(time.Now()) {
			continue
		}
		name, addr, ok := n.owner(key)
		host, pathQuery, found := strings.Cut(key, "/")
		if !ok || !found || host == "" {
			continue // this node still owns it (it is alone), or not a request key
		}
		for _, e := range obj.Variants {
			if e.Body == nil || !e.Fresh(time.Now()) {
				continue // a fill in progress, or not worth a revalidation at the new owner
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return report()
			}
			req := &peerv1.FetchRequest{Key: key, Host: host, PathQuery: "/" + pathQuery, From: n.cfg.Name,
				Epoch: n.mesh.epoch.Load(), TakeOver: true, Headers: varyFields(e.VaryKey)}
			wg.Go(func() {
				defer func() { <-sem }()
				if n.offer(ctx, name, addr, req) {
					taken.Add(1)
				} else {
					failed.Add(1)
				}
			})
		}
	}
	h := report()
	n.log.Info("handed objects off to their new owners", "taken", h.Taken, "not_taken", h.NotTaken,
		"took", h.Took.Round(time.Millisecond))
	return h
}

// offer sends one take-over request and reports whether the owner took the
// response.
func (n *Node) offer(ctx context.Context, name, addr string, req *peerv1.FetchRequest) bool {
	resp, err := n.mesh.peers.Fetch(ctx, addr, req)
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil && (resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusGatewayTimeout) {
			err = errNotTaken
		}
	}
	if err != nil {
		n.metrics.handedOff.WithLabelValues("failed").Inc()
		n.log.Debug("hand-off not taken", "peer", name, "key", req.GetKey(), "err", err)
		return false
	}
	n.metrics.handedOff.WithLabelValues("taken").Inc()
	return true
}

// errNotTaken is an offer the new owner answered with an edge error.
var errNotTaken = errors.New("the new owner did not take the response")

// varyFields turns a secondary key (httpcache.SecondaryKey: "Name=value"
// lines) back into the request fields that select the same variant.
func varyFields(varyKey string) []*peerv1.HeaderField {
	var out []*peerv1.HeaderField
	for line := range strings.Lines(varyKey) {
		name, value, ok := strings.Cut(strings.TrimSuffix(line, "\n"), "=")
		if ok && name != "" && value != "" {
			out = append(out, &peerv1.HeaderField{Name: name, Values: []string{value}})
		}
	}
	return out
}
