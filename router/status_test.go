package router

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/internal/statuspage"
)

// TestStatusPage: the router's page lists each region with its edges, the
// edges a client there would be sent to now (a fallback's when it has none)
// and its answers per minute.
func TestStatusPage(t *testing.T) {
	src := &edges{list: []Edge{
		{Name: "a1", Region: "a", HTTPAddr: "127.0.0.11:8080", State: "alive", Ready: true, Load: 5},
		{Name: "a2", Region: "a", HTTPAddr: "127.0.0.12:8080", State: "draining", Ready: true},
		{Name: "b1", Region: "b", HTTPAddr: "127.0.0.21:8080", State: "alive", Ready: true},
	}}
	s := startRouter(t, src, testZones, func(c *Config) {
		c.Name = "r1"
		c.StatusAccess = statuspage.Access{Open: true}
	})
	for range 3 {
		get(t, s, "GET", "www.example.test", "/x", "127.0.0.2", nil) // a's clients
	}
	get(t, s, "GET", "www.example.test", "/x", "127.0.0.3", nil) // b's
	read := func(path string) (*http.Response, string) {
		t.Helper()
		resp, err := http.Get("http://" + s.MetricsAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	_, body := read("/status.json")
	var p StatusPage
	if err := json.Unmarshal([]byte(body), &p); err != nil {
		t.Fatal(err)
	}
	if p.Router != "r1" || len(p.Regions) != 2 || len(p.Minutes) != decisionMinutes {
		t.Fatalf("status.json: %s", body)
	}
	a, b := p.Regions[0], p.Regions[1]
	if a.Name != "a" || !slices.Equal(a.AnswerWith, []string{"a1"}) || a.AnswerRegion != "a" || len(a.Edges) != 2 || a.Edges[1].Healthy {
		t.Errorf("region a: %+v", a)
	}
	if got := a.DecisionsPerMinute[len(a.DecisionsPerMinute)-1] + a.DecisionsPerMinute[len(a.DecisionsPerMinute)-2]; got != 3 {
		t.Errorf("a's answers in the last two minutes: %d; want 3", got)
	}
	if b.Name != "b" || !slices.Equal(b.AnswerWith, []string{"b1"}) {
		t.Errorf("region b: %+v", b)
	}
	// a without a healthy edge: its clients go to b, its fallback.
	src.set("a1", func(e *Edge) { e.Ready = false })
	_, body = read("/status.json")
	p = StatusPage{}
	_ = json.Unmarshal([]byte(body), &p)
	if a := p.Regions[0]; !slices.Equal(a.AnswerWith, []string{"b1"}) || a.AnswerRegion != "b" {
		t.Errorf("region a without a healthy edge: answers with %v from %q; want b1 from b", a.AnswerWith, a.AnswerRegion)
	}
	resp, html := read("/status")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Fatalf("/status: %d %v", resp.StatusCode, resp.Header)
	}
	for _, want := range []string{`data-region="a"`, `data-region="b"`, `(from b)`, `data-name="a2" data-healthy="false"`, `falls back to b`, `<svg class="spark"`} {
		if !strings.Contains(html, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
}

// TestStatusPageRefused: a router whose status page is not open and has no
// token refuses it and says what opens it.
func TestStatusPageRefused(t *testing.T) {
	s := startRouter(t, &edges{}, testZones, func(c *Config) { c.StatusAccess.Settings = "--status-token-file" })
	resp, err := http.Get("http://" + s.MetricsAddr() + "/status")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(b), "--status-token-file") {
		t.Errorf("%d %s", resp.StatusCode, b)
	}
}

func TestDecisionsRollOver(t *testing.T) {
	var d decisions
	t0 := time.Date(2026, 11, 30, 12, 0, 30, 0, time.UTC)
	d.add("a", t0)
	d.add("a", t0.Add(time.Minute))
	d.add("a", t0.Add(time.Minute))
	_, c := d.series(t0.Add(time.Minute))
	if n := len(c["a"]); c["a"][n-1] != 2 || c["a"][n-2] != 1 {
		t.Errorf("per minute: %v", c["a"])
	}
	// A bucket reused 15 minutes later starts again.
	d.add("a", t0.Add(15*time.Minute))
	_, c = d.series(t0.Add(15 * time.Minute))
	if n := len(c["a"]); c["a"][n-1] != 1 || c["a"][n-15] != 2 {
		t.Errorf("after 15 minutes: %v", c["a"])
	}
}
