package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	adminv1 "github.com/meshcdn/meshcdn/proto/meshcdn/admin/v1"
)

// TestStoppedNodeMissesNoPurge is acceptance 4 of the admin issue: one node
// of three is stopped (SIGSTOP) while a purge is issued, then resumed. The
// purge's answer names it as not applied, and once resumed it never serves
// a purged object: neither one it owns nor its copy of another's.
func TestStoppedNodeMissesNoPurge(t *testing.T) {
	var version atomic.Int64
	version.Store(1)
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v := fmt.Sprint(version.Load())
		w.Header().Set("Cache-Control", "public, max-age=3600")
		w.Header().Set("ETag", `"`+v+`"`)
		if r.Header.Get("If-None-Match") == `"`+v+`"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		fmt.Fprintf(w, "version %s of %s", v, r.URL.Path)
	}))
	defer origin.Close()
	e1 := startEdgeProc(t, "--name", "e1", "--origin", origin.URL)
	e2 := startEdgeProc(t, "--name", "e2", "--origin", origin.URL, "--join", e1.gossip)
	e3 := startEdgeProc(t, "--name", "e3", "--origin", origin.URL, "--join", e1.gossip)
	edges := []*edgeProc{e1, e2, e3}
	for _, e := range edges {
		waitFor(t, 20*time.Second, "a ring of 3 at every edge", func() bool { return e.metricValue(t, "meshcdn_ring_members") == 3 })
	}

	// e3 caches every path: the ones it owns, and copies of the others'.
	var paths []string
	for i := range 30 {
		p := fmt.Sprintf("/obj/%d.css", i)
		for range 2 {
			if code, body, err := get(e3.http + p); err != nil || code != 200 || !strings.HasPrefix(string(body), "version 1") {
				t.Fatalf("GET %s at e3: %d %q %v", p, code, body, err)
			}
		}
		if cacheStatus(t, e3.http+p) == "hit" {
			paths = append(paths, p)
		}
	}
	if len(paths) < 10 {
		t.Fatalf("only %d of 30 paths are hits at e3", len(paths))
	}

	if err := e3.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// Signals are delivered asynchronously: wait until the kernel reports
	// the process stopped.
	stat := fmt.Sprintf("/proc/%d/stat", e3.cmd.Process.Pid)
	waitFor(t, 5*time.Second, "e3 stopped", func() bool {
		b, err := os.ReadFile(stat)
		_, rest, _ := strings.Cut(string(b), ") ")
		return err == nil && strings.HasPrefix(rest, "T")
	})
	stopped := true
	defer func() {
		if stopped {
			_ = e3.cmd.Process.Signal(syscall.SIGCONT)
		}
	}()
	version.Store(2)
	conn, err := grpc.NewClient(e1.admin, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var urls []string
	for _, p := range paths {
		urls = append(urls, "http://127.0.0.1"+p)
	}
	start := time.Now()
	resp, err := adminv1.NewAdminServiceClient(conn).Purge(t.Context(), &adminv1.PurgeRequest{Urls: urls})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("purge answered after %v: %v", time.Since(start).Round(time.Millisecond), resp.GetNodes())
	applied := map[string]bool{}
	for _, r := range resp.GetNodes() {
		applied[r.GetNode()] = r.GetApplied()
	}
	if _, named := applied["e3"]; !named || applied["e3"] || !applied["e1"] || !applied["e2"] {
		t.Fatalf("receipts %v: want e1 and e2 applied, e3 named as not applied", resp.GetNodes())
	}

	if err := e3.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	stopped = false
	for round := range 3 {
		for _, p := range paths {
			code, body, err := get(e3.http + p)
			if err != nil || code != 200 {
				t.Fatalf("GET %s at e3 after resuming: %d %v", p, code, err)
			}
			if !strings.HasPrefix(string(body), "version 2") {
				t.Fatalf("round %d: e3 served the purged object %s: %q\n%s", round, p, body, e3.logs())
			}
		}
	}
	// Back in step (the late fan-out call or the others' logs brought the
	// purge), it serves hits again.
	waitFor(t, 10*time.Second, "e3 back in step", func() bool { return e3.metricValue(t, "meshcdn_purges_in_step") == 1 })
	for _, p := range paths {
		if s := cacheStatus(t, e3.http+p); s != "hit" {
			t.Errorf("%s at e3 back in step: %s", p, s)
		}
	}
}

// cacheStatus returns "hit" or "miss" for a GET of url.
func cacheStatus(t *testing.T, url string) string {
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if strings.HasPrefix(resp.Header.Get("Cache-Status"), "meshcdn; hit") {
		return "hit"
	}
	return "miss"
}
