package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meshcdn/meshcdn/node/admin"
	"github.com/meshcdn/meshcdn/node/cache"
	peerv1 "github.com/meshcdn/meshcdn/proto/meshcdn/peer/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// purgeTimeout bounds one node's answer to a fanned-out purge.
const purgeTimeout = 2 * time.Second

// PurgeLocal applies a purge to this node's tiers, unless its log shows it
// was applied already, and returns how many variants it removed or marked
// stale. Fills in flight when it runs do not store what they fetched.
func (n *Node) PurgeLocal(req *peerv1.PurgeRequest) int64 {
	if !n.purgeLog.add(req) {
		return 0
	}
	var removed int
	if !req.GetSoft() && len(req.GetKeyPrefixes()) == 0 && len(req.GetTags()) == 0 {
		n.purgeGen.Add(1)
		for _, k := range req.GetKeys() { // the common case needs no scan
			if n.invalidate(k) {
				removed++
			}
		}
	} else {
		// Applied as it arrives: whatever is stored now predates it.
		set := newTimedPurge()
		set.addBound(req, forever)
		removed = n.applyTimed(set, req.GetSoft())
	}
	n.log.Info("purge applied", "purge", req.GetId(), "from", req.GetFrom(), "removed", removed, "soft", req.GetSoft())
	return int64(removed)
}

// eachTag calls f with every tag of the entry's Surrogate-Key (space
// separated) and Cache-Tag (comma separated) fields until f returns false.
func eachTag(e *cache.Entry, f func(string) bool) {
	for _, v := range e.Header.Values("Surrogate-Key") {
		for _, t := range strings.Fields(v) {
			if !f(t) {
				return
			}
		}
	}
	for _, v := range e.Header.Values("Cache-Tag") {
		for t := range strings.SplitSeq(v, ",") {
			if t = strings.TrimSpace(t); t != "" && !f(t) {
				return
			}
		}
	}
}

// purgeKeys turns absolute URLs and URL prefixes into cache keys and key
// prefixes; errors name the field.
func (n *Node) purgeKeys(urls, prefixes []string) (keys, keyPrefixes []string, err error) {
	parse := func(field string, i int, raw string) (string, error) {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return "", fmt.Errorf("%w: %s[%d]: %q is not an absolute http(s) URL", admin.ErrBadURL, field, i, raw)
		}
		st, ok := n.sites.Lookup(u.Host)
		if !ok {
			return "", fmt.Errorf("%w: %s[%d]: no site is configured for host %q", admin.ErrBadURL, field, i, u.Host)
		}
		return st.CacheKey(u.Host, u.EscapedPath(), u.RawQuery), nil
	}
	for i, raw := range urls {
		k, err := parse("urls", i, raw)
		if err != nil {
			return nil, nil, err
		}
		keys = append(keys, k)
	}
	for i, raw := range prefixes {
		k, err := parse("prefixes", i, raw)
		if err != nil {
			return nil, nil, err
		}
		if !strings.Contains(raw, "?") {
			k = strings.TrimSuffix(k, "?") // a prefix of paths, not of a query
		}
		keyPrefixes = append(keyPrefixes, k)
	}
	return keys, keyPrefixes, nil
}

// purgeCluster applies a purge on every member and returns a receipt per
// member. The owners of the purged URLs go first, so a node purged later
// cannot refill from an owner that still holds the old object.
func (n *Node) purgeCluster(ctx context.Context, urls, prefixes, tags []string, soft bool) (string, []admin.Receipt, error) {
	keys, keyPrefixes, err := n.purgeKeys(urls, prefixes)
	if err != nil {
		return "", nil, err
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	req := &peerv1.PurgeRequest{Id: hex.EncodeToString(id[:]), Keys: keys, KeyPrefixes: keyPrefixes, Tags: tags,
		Soft: soft, From: n.cfg.Name, Issued: timestamppb.Now()}
	members := adminView{n}.Members()
	owners := map[string]bool{}
	if n.mesh != nil {
		r := n.mesh.ring.Load().ring
		for _, k := range keys {
			if o, ok := r.Owner(k); ok {
				owners[o] = true
			}
		}
	}
	receipts := make([]admin.Receipt, len(members))
	apply := func(first bool) {
		var wg sync.WaitGroup
		for i, m := range members {
			if owners[m.Name] != first {
				continue
			}
			wg.Go(func() { receipts[i] = n.purgeMember(ctx, m, req) })
		}
		wg.Wait()
	}
	apply(true)
	apply(false)
	if n.mesh != nil {
		receipts = append(receipts, n.failedReceipts(catchUpNote)...)
		n.purgeFence(ctx, receipts)
	}
	return req.GetId(), receipts, nil
}

// catchUpNote tells an operator what a member that missed a purge does.
const catchUpNote = "; it applies the purge from the others' logs when it is back, and revalidates until then"

// failedReceipts names the members that failed within the last hour as not
// having applied a purge, note following the time of the failure.
func (n *Node) failedReceipts(note string) []admin.Receipt {
	var out []admin.Receipt
	for _, f := range n.mesh.gossip.Failed() {
		out = append(out, admin.Receipt{Node: f.Name, Error: "failed at " + f.At.UTC().Format(time.RFC3339) + note})
	}
	return out
}

// unanswered says why a member did not answer a purge call.
func unanswered(err error) string {
	if status.Code(err) == codes.DeadlineExceeded {
		return fmt.Sprintf("no answer within %v", purgeTimeout)
	}
	return status.Convert(err).Message()
}

// purgeFence returns once every member that did not acknowledge the purge
// has stopped trusting its purge log, so that from the caller's answer on it
// either has the purge or revalidates what it serves: a lease after the last
// acknowledgement.
func (n *Node) purgeFence(ctx context.Context, receipts []admin.Receipt) {
	if !slices.ContainsFunc(receipts, func(r admin.Receipt) bool { return !r.Applied }) {
		return
	}
	t := time.NewTimer(n.mesh.purges.lease)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// checkDisk applies the purge log to the disk tier once its index is
// complete: objects indexed after a purge ran are caught by it now.
func (n *Node) checkDisk() {
	late := newLatePurges()
	for _, r := range n.purgeLog.all() {
		late.add(r.GetPurge())
	}
	if removed := n.applyLate(late); removed > 0 {
		n.log.Info("purges applied to disk objects indexed late", "removed", removed)
	}
	n.diskChecked.Store(true)
}

// AppliedPurges returns those of ids this node has applied.
func (n *Node) AppliedPurges(ids []string) []string {
	var out []string
	for _, id := range ids {
		if n.purgeLog.has(id) {
			out = append(out, id)
		}
	}
	return out
}

// purgeStatus asks every member whether it has applied purge id.
func (n *Node) purgeStatus(ctx context.Context, id string) []admin.Receipt {
	members := adminView{n}.Members()
	receipts := make([]admin.Receipt, len(members))
	var wg sync.WaitGroup
	for i, m := range members {
		wg.Go(func() {
			r := admin.Receipt{Node: m.Name}
			if m.Self {
				r.Applied = n.purgeLog.has(id)
			} else {
				ctx, cancel := context.WithTimeout(ctx, purgeTimeout)
				defer cancel()
				got, err := n.mesh.peers.PurgeStatus(ctx, m.PeerAddr, []string{id})
				if err != nil {
					r.Error = unanswered(err)
				}
				r.Applied = slices.Contains(got, id)
			}
			if !r.Applied && r.Error == "" {
				r.Error = "not in its purge log"
			}
			receipts[i] = r
		})
	}
	wg.Wait()
	if n.mesh != nil {
		receipts = append(receipts, n.failedReceipts("")...)
	}
	return receipts
}

func (n *Node) purgeMember(ctx context.Context, m admin.MemberInfo, req *peerv1.PurgeRequest) admin.Receipt {
	if m.Self {
		return admin.Receipt{Node: m.Name, Applied: true, Removed: n.PurgeLocal(req)}
	}
	ctx, cancel := context.WithTimeout(ctx, purgeTimeout)
	defer cancel()
	removed, err := n.mesh.peers.Purge(ctx, m.PeerAddr, req)
	if err != nil {
		return admin.Receipt{Node: m.Name, Error: unanswered(err) + catchUpNote}
	}
	return admin.Receipt{Node: m.Name, Applied: true, Removed: removed}
}
