package node

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/node/status"
)

// statusJSON reads a node's /status.json.
func statusJSON(t *testing.T, n *Node) status.Page {
	t.Helper()
	resp, err := http.Get("http://" + n.MetricsAddr() + "/status.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/status.json: %d %s", resp.StatusCode, b)
	}
	var p status.Page
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatalf("/status.json: %v: %s", err, b)
	}
	return p
}

// bodiesOf is an origin whose every answer is size bytes, cacheable for an
// hour.
func bodiesOf(t *testing.T, size int) *testOrigin {
	return newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=3600")
		_, _ = io.WriteString(w, strings.Repeat("x", size))
	})
}

// TestStatusPage: each node of a 3-node cluster serves its status, which
// lists the three members with their shares, counts the traffic it served
// (requests, hits, peer fetches, origin requests) and lists a purge with
// every member's receipt.
func TestStatusPage(t *testing.T) {
	o := bodiesOf(t, 1000)
	nodes := startCluster(t, o, 3, func(c *Config) { c.StatusInterval = 200 * time.Millisecond })
	p := statusJSON(t, nodes[0])
	var names []string
	for _, m := range p.Members {
		names = append(names, m.Name)
		if m.State != "alive" || m.Role != "edge" || m.Share <= 0 || m.Self != (m.Name == "n1") {
			t.Errorf("member %+v", m)
		}
	}
	if !slices.Equal(names, []string{"n1", "n2", "n3"}) {
		t.Errorf("members %v; want n1, n2, n3", names)
	}
	if p.HitRatio != nil || p.Requests != 0 {
		t.Errorf("before traffic: %d requests, hit ratio %v", p.Requests, *p.HitRatio)
	}
	// Ten objects, each asked for four times at n1: 10 misses (filled from
	// the origin or through their owners) and 30 hits.
	for i := range 10 {
		for range 4 {
			do(t, nodes[0], "GET", "/obj/"+string(rune('a'+i)))
		}
	}
	eventually(t, 10*time.Second, func() bool {
		p = statusJSON(t, nodes[0])
		return len(p.Series.Times) > 0 && p.Series.Total.RequestsPerSecond[len(p.Series.Times)-1] == 0
	})
	if p.Requests != 40 || p.HitRatio == nil || *p.HitRatio != 0.75 || p.ByteHitRatio == nil || *p.ByteHitRatio != 0.75 {
		t.Errorf("after 40 requests: %d, hit ratio %v, byte hit ratio %v; want 40, 0.75, 0.75", p.Requests, p.HitRatio, p.ByteHitRatio)
	}
	if len(p.Sites) != 1 {
		t.Fatalf("sites %+v", p.Sites)
	}
	var sum, peers, origins float64
	for i := range p.Series.Times {
		secs := p.Series.IntervalSeconds
		sum += p.Series.Total.RequestsPerSecond[i] * secs
		peers += p.Series.Total.PeerFetchesPerSecond[i] * secs
		origins += p.Series.Total.OriginRequestsPerSecond[i] * secs
	}
	if sum < 35 || sum > 45 {
		t.Errorf("requests in the series: %.1f; want 40 (the intervals are measured, not nominal)", sum)
	}
	// n1 asked the owners of the objects it does not own; it asked the
	// origin for its own.
	if peers < 1 || origins < 1 || peers+origins < 9 || peers+origins > 11 {
		t.Errorf("peer fetches %.1f and origin requests %.1f in the series; want about 10 in all, some of each", peers, origins)
	}
	if len(p.Origins) == 0 || !p.Origins[0].Up || p.Origins[0].Requests == 0 || p.Origins[0].LatencyMS <= 0 {
		t.Errorf("origins %+v", p.Origins)
	}

	id, receipts, err := adminView{nodes[1]}.Purge(t.Context(), []string{"http://x/obj/a"}, nil, nil, false)
	if err != nil || len(receipts) != 3 {
		t.Fatalf("purge: %v %v", err, receipts)
	}
	p = statusJSON(t, nodes[1])
	if len(p.Purges) != 1 || p.Purges[0].ID != id || p.Purges[0].From != "n2" || len(p.Purges[0].Receipts) != 3 || p.Purges[0].What != "key x/obj/a" {
		t.Fatalf("purges at the issuer: %+v", p.Purges)
	}
	for _, r := range p.Purges[0].Receipts {
		if !r.Applied {
			t.Errorf("receipt %+v", r)
		}
	}
	// Another member lists it too, without receipts (it was issued elsewhere).
	eventually(t, 10*time.Second, func() bool {
		q := statusJSON(t, nodes[2])
		return len(q.Purges) == 1 && q.Purges[0].ID == id && len(q.Purges[0].Receipts) == 0
	})
}
