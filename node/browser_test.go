package node

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/meshcdn/meshcdn/node/site"
)

// browser starts headless Chromium for the test and returns a context to
// drive it with.
func browser(t *testing.T) context.Context {
	t.Helper()
	var path string
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		t.Fatal("no Chromium on PATH: make test installs Debian's chromium package")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox,
		chromedp.Flag("disable-gpu", true), chromedp.WindowSize(1280, 1000),
		chromedp.UserDataDir(t.TempDir()))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelCtx(); cancelAlloc() })
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil { // starts the browser
		t.Fatalf("starting %s: %v", path, err)
	}
	return ctx
}

// TestStatusPageInBrowser drives headless Chromium against a 3-node
// cluster's status page: it renders, lists every member, and its hit ratio
// changes after traffic without the page being reloaded. It writes its
// screenshot to $STATUS_SCREENSHOT when that is set (the README's).
func TestStatusPageInBrowser(t *testing.T) {
	o := bodiesOf(t, 2000)
	// Two regions, the shield in the first, mesh TLS: the page has all of
	// its parts to show.
	meshTLS := withMeshTLS(t)
	var nodes []*Node
	for i, region := range []string{"hangzhou", "hangzhou", "frankfurt"} {
		cfg := Config{Name: fmt.Sprintf("n%d", i+1), Version: "test", StatusInterval: 250 * time.Millisecond,
			Sites: []site.Config{{Name: "www", Hosts: []string{"www.example"}, Origins: []site.OriginConfig{{URL: o.URL}}}},
			Mesh:  &MeshConfig{PeerAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0", Fast: true, Region: region, ShieldRegion: "hangzhou"}}
		if i > 0 {
			cfg.Mesh.Join = []string{nodes[0].GossipAddr()}
		}
		meshTLS(&cfg)
		nodes = append(nodes, startNode(t, o, cfg))
	}
	eventually(t, 10*time.Second, func() bool {
		for _, n := range nodes {
			if len(adminView{n}.Members()) != 3 {
				return false
			}
		}
		return true
	})
	ctx := browser(t)
	url := "http://" + nodes[0].MetricsAddr() + "/status"
	if err := chromedp.Do(ctx, chromedp.Navigate(url), chromedp.WaitVisible("#members")); err != nil {
		t.Fatal(err)
	}
	title, err := chromedp.Run(ctx, chromedp.Title())
	if err != nil {
		t.Fatal(err)
	}
	members := evaluate[int](t, ctx, `document.querySelectorAll("#members tr.member").length`)
	ratio := text(t, ctx, "#hit-ratio")
	if !strings.Contains(title, "n1") || members != 3 || ratio != "–" {
		t.Fatalf("before traffic: title %q, %d member rows, hit ratio %q; want n1's page, 3, –", title, members, ratio)
	}
	for _, name := range []string{"n1", "n2", "n3"} {
		a, err := chromedp.Run(ctx, chromedp.AttributeValue(`#members tr[data-name="`+name+`"]`, "data-state"))
		if err != nil || a.Value != "alive" {
			t.Errorf("member %s: state %q, %v", name, a.Value, err)
		}
	}
	evaluate[string](t, ctx, `window.loadedOnce = "yes"`)

	// Four rounds over ten objects, a sample apart: 10 misses, 30 hits.
	for range 4 {
		before := len(statusJSON(t, nodes[0]).Series.Times)
		for i := range 10 {
			do(t, nodes[0], "GET", "/obj/"+string(rune('a'+i)), "Host", "www.example")
		}
		eventually(t, 10*time.Second, func() bool { return len(statusJSON(t, nodes[0]).Series.Times) > before })
	}
	if _, _, err := (adminView{nodes[0]}).Purge(t.Context(), []string{"http://www.example/obj/a"}, nil, nil, false); err != nil {
		t.Fatal(err)
	}
	// The page refreshes itself: the same document (the mark set on it is
	// still there) shows the new hit ratio and the site.
	deadline := time.Now().Add(30 * time.Second)
	for {
		ratio = text(t, ctx, "#hit-ratio")
		mark := evaluate[string](t, ctx, `window.loadedOnce || ""`)
		site := evaluate[string](t, ctx, `(document.querySelector('#sites tr[data-site="www"]') || {}).textContent || ""`)
		if mark != "yes" {
			t.Fatal("the page was reloaded; it should refresh in place")
		}
		purged := evaluate[int](t, ctx, `document.querySelectorAll("#purges .receipt.ok").length`)
		if ratio == "75.0%" && strings.Contains(site, "75.0%") && purged == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hit ratio on the page %q (site row %q), %d purge receipts, 30 s after 40 requests (30 of them hits) and a purge; want 75.0%%, 3", ratio, site, purged)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if live := text(t, ctx, "#live"); !strings.HasPrefix(live, "live") {
		t.Errorf("the live indicator says %q", live)
	}

	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "status.png")
	if p := os.Getenv("STATUS_SCREENSHOT"); p != "" {
		out = p
	}
	if err := os.WriteFile(out, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", out, len(shot))

	// On a phone's width the page fits: wide tables scroll inside their
	// boxes, the page itself does not.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(390, 844), chromedp.Reload(), chromedp.WaitVisible("#members")); err != nil {
		t.Fatal(err)
	}
	if evaluate[bool](t, ctx, `document.documentElement.scrollWidth > window.innerWidth + 1`) {
		t.Error("the page is wider than a 390 px phone screen")
	}
}

// evaluate runs a JavaScript expression in the page and returns its value.
func evaluate[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return v
}

// text is the visible text of the element sel selects.
func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Text(sel))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return strings.TrimSpace(v)
}
