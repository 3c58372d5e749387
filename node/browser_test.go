package node

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/meshcdn/meshcdn/node/site"
)

// browser starts headless Chromium for the test and returns a context to
// drive it with; flags are more command-line options.
func browser(t *testing.T, flags ...chromedp.ExecAllocatorOption) context.Context {
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
	opts = append(opts, flags...)
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
	st := readPage(t, ctx)
	slices.Sort(st.Members) // the page lists them by region
	if !strings.Contains(title, "n1") || !slices.Equal(st.Members, []string{"n1=alive", "n2=alive", "n3=alive"}) || st.Ratio != "–" {
		t.Fatalf("before traffic: title %q, members %v, hit ratio %q; want n1's page, n1 to n3 alive, –", title, st.Members, st.Ratio)
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
	// still there) shows the new hit ratio, the site and the purge.
	deadline := time.Now().Add(30 * time.Second)
	for {
		st = readPage(t, ctx)
		if st.Mark != "yes" {
			t.Fatal("the page was reloaded; it should refresh in place")
		}
		if st.Ratio == "75.0%" && strings.Contains(st.Site, "75.0%") && st.Receipts == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the page 30 s after 40 requests (30 of them hits) and a purge: %+v; want a hit ratio of 75.0%% there and in the site's row, 3 receipts", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.HasPrefix(st.Live, "live") {
		t.Errorf("the live indicator says %q", st.Live)
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

// pageState is what the test reads off the status page.
type pageState struct {
	Ratio    string   `json:"ratio"`    // the hit ratio figure
	Site     string   `json:"site"`     // the www site's row
	Receipts int      `json:"receipts"` // purge receipts shown as applied
	Members  []string `json:"members"`  // name=state of each member row
	Live     string   `json:"live"`     // the live indicator
	Mark     string   `json:"mark"`     // set by the test on the document
}

// readPage reads the page in one evaluation: the page's script swaps its
// main element every two seconds, and a script runs whole, never in the
// middle of another.
func readPage(t *testing.T, ctx context.Context) pageState {
	t.Helper()
	return evaluate[pageState](t, ctx, `(() => {
		const text = s => ((document.querySelector(s) || {}).textContent || "").trim();
		return {
			ratio: text("#hit-ratio"),
			site: text('#sites tr[data-site="www"]'),
			receipts: document.querySelectorAll("#purges .receipt.ok").length,
			members: [...document.querySelectorAll("#members tr.member")].map(r => r.dataset.name + "=" + r.dataset.state),
			live: text("#live"),
			mark: window.loadedOnce || "",
		};
	})()`)
}
