package node

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/node/compress"
	adminv1 "github.com/meshcdn/meshcdn/proto/meshcdn/admin/v1"
)

// rawHit is one response read off a connection as it was sent: its
// status line, its field lines in order and its body.
type rawHit struct {
	status string
	lines  []string
	body   string
}

// readRaw reads one response to a request of method from br.
func readRaw(t *testing.T, br *bufio.Reader, method string) rawHit {
	t.Helper()
	var h rawHit
	length := -1
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the header: %v", err)
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			break
		}
		if h.status == "" {
			h.status = line
			continue
		}
		h.lines = append(h.lines, line)
		if v, ok := strings.CutPrefix(line, "Content-Length: "); ok {
			length, _ = strconv.Atoi(v)
		}
	}
	if method == http.MethodHead || length <= 0 {
		return h
	}
	b := make([]byte, length)
	if _, err := io.ReadFull(br, b); err != nil {
		t.Fatalf("reading the body: %v", err)
	}
	h.body = string(b)
	return h
}

// fields returns the names of h's lines and their values, less the
// fields each response has its own of.
func (h rawHit) fields(skip ...string) []string {
	var out []string
	for _, l := range h.lines {
		name, _, _ := strings.Cut(l, ":")
		if !slices.Contains(skip, name) {
			out = append(out, l)
		}
	}
	return out
}

// TestStoredFieldsOverHTTP1: the HTTP/1.1 front sends a stored response's
// fields as rendered once for the entry. Every hit sends them in one order
// (a map copied per response changes its order from one response to the
// next), with the same fields and values net/http's front sends for the
// same hit, the targeted field the edge obeyed left out, Age, Date and
// Cache-Status of their own, Vary completed for a response the edge
// compresses for others, and the length on HEAD. A refreshed entry is
// rendered anew.
func TestStoredFieldsOverHTTP1(t *testing.T) {
	var version atomic.Int64
	version.Store(1)
	body := strings.Repeat("a{color:red}\n", 100)
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Cache-Control", "public, max-age=60")
		h.Set("Cdn-Cache-Control", "max-age=600")
		h.Set("Content-Type", "text/css")
		h.Set("ETag", `"v1"`)
		h.Set("X-Version", strconv.FormatInt(version.Load(), 10))
		for i := range 8 {
			h.Set(fmt.Sprintf("X-Field-%d", i), strconv.Itoa(i))
		}
		if r.Header.Get("If-None-Match") == `"v1"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		_, _ = io.WriteString(w, body)
	})
	cfg := compressionSite(o, t, compress.Config{})
	cfg.AdminAddr = "127.0.0.1:0"
	n := startNode(t, nil, cfg)
	const get = "GET /s.css HTTP/1.1\r\nHost: www.example.test\r\n\r\n"
	wantStatus(t, do(t, n, "GET", "/s.css", "Host", "www.example.test"), "meshcdn; fwd=uri-miss")

	c, err := net.DialTimeout("tcp", n.HTTPAddr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(c)
	var hits []rawHit
	for range 5 {
		if _, err := io.WriteString(c, get); err != nil {
			t.Fatal(err)
		}
		hits = append(hits, readRaw(t, br, "GET"))
	}
	own := []string{"Age", "Date"}
	first := hits[0]
	for i, h := range hits {
		if h.status != "HTTP/1.1 200 OK" || h.body != body {
			t.Fatalf("hit %d: %s, %d bytes", i, h.status, len(h.body))
		}
		if !slices.Equal(h.fields(own...), first.fields(own...)) {
			t.Errorf("hit %d sent\n%q\nafter\n%q", i, h.fields(own...), first.fields(own...))
		}
	}
	got := first.fields()
	for _, want := range []string{"Cache-Status: meshcdn; hit", "Accept-Ranges: bytes", "Vary: Accept-Encoding",
		"Via: 1.1 meshcdn", "X-Version: 1", "Etag: \"v1\"", "Content-Length: " + strconv.Itoa(len(body))} {
		if !slices.Contains(got, want) {
			t.Errorf("no %q in %q", want, got)
		}
	}
	count := func(name string) int {
		k := 0
		for _, l := range got {
			if strings.HasPrefix(l, name+":") {
				k++
			}
		}
		return k
	}
	if count("Cdn-Cache-Control") != 0 || count("Date") != 1 || count("Age") != 1 {
		t.Errorf("Cdn-Cache-Control %d, Date %d, Age %d times in %q; want 0, 1, 1", count("Cdn-Cache-Control"), count("Date"), count("Age"), got)
	}

	// The same hit through net/http's writer: the same fields.
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "http://www.example.test/s.css", nil)
	n.ServeHTTP(rec, req)
	var want []string
	for k, vs := range rec.Header() {
		for _, v := range vs {
			want = append(want, k+": "+v)
		}
	}
	have := first.fields(own...)
	want = slices.DeleteFunc(want, func(l string) bool { return strings.HasPrefix(l, "Age:") || strings.HasPrefix(l, "Date:") })
	slices.Sort(want)
	slices.Sort(have)
	if !slices.Equal(have, want) {
		t.Errorf("HTTP/1.1 sent\n%q\nnet/http's writer\n%q", have, want)
	}

	if _, err := io.WriteString(c, "HEAD /s.css HTTP/1.1\r\nHost: www.example.test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	head := readRaw(t, br, "HEAD")
	if !slices.Contains(head.lines, "Content-Length: "+strconv.Itoa(len(body))) || !slices.Contains(head.lines, "Cache-Status: meshcdn; hit") {
		t.Errorf("HEAD: %q; want the hit's length", head.lines)
	}

	// A soft purge, then a 304 with a new field: the entry it refreshes
	// sends the new field, not what was rendered for the old one.
	version.Store(2)
	ac, _ := adminClient(t, n.AdminAddr())
	if _, err := ac.Purge(t.Context(), &adminv1.PurgeRequest{Urls: []string{"http://www.example.test/s.css"}, Soft: true}); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, do(t, n, "GET", "/s.css", "Host", "www.example.test"), "meshcdn; fwd=stale; fwd-status=304")
	if _, err := io.WriteString(c, get); err != nil {
		t.Fatal(err)
	}
	after := readRaw(t, br, "GET")
	if !slices.Contains(after.lines, "X-Version: 2") || !slices.Contains(after.lines, "Cache-Status: meshcdn; hit") {
		t.Errorf("after the refresh: %q; want a hit with X-Version 2", after.lines)
	}
}
