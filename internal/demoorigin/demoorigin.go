// Package demoorigin is the demo "ECS origin" behind `meshcdn origin` and
// `meshcdn dev`: a small static site (HTML, CSS, JS, images and a multi-MiB
// media file) with validators and Cache-Control, and dynamic endpoints under
// /api/ that answer Cache-Control: no-store. It counts the requests it serves,
// so a demo or a test can see what the edge saved it.
package demoorigin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"html"
	"image"
	"image/color"
	"image/png"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"path"
	"sort"
	"strings"
	"sync/atomic"
	"time"
)

// Options configure the demo origin. The zero value serves the generated site.
type Options struct {
	// Dir, when set, serves files from this directory instead of the sample site.
	Dir string
	// Latency is added to every request, to show what the edge saves.
	Latency time.Duration
	// MaxAge is the Cache-Control max-age of static files. Default 5m.
	MaxAge time.Duration
}

// Origin is the demo origin's handler.
type Origin struct {
	opts     Options
	files    map[string]file
	fsys     fs.FS
	started  time.Time
	requests atomic.Int64
}

type file struct {
	data    []byte
	ctype   string
	etag    string
	modTime time.Time
	cc      string
}

// VideoSize is the size of the sample site's /media/sample.mp4.
const VideoSize = 8 << 20

// New returns the demo origin.
func New(opts Options) *Origin {
	if opts.MaxAge == 0 {
		opts.MaxAge = 5 * time.Minute
	}
	o := &Origin{opts: opts, started: time.Now()}
	if opts.Dir != "" {
		o.fsys = os.DirFS(opts.Dir)
	} else {
		o.files = sampleSite(opts.MaxAge)
	}
	return o
}

// Requests is how many requests the origin has served (its own /_origin/stats
// excluded).
func (o *Origin) Requests() int64 { return o.requests.Load() }

// Paths lists the sample site's static files.
func (o *Origin) Paths() []string {
	var ps []string
	for p := range o.files {
		ps = append(ps, p)
	}
	sort.Strings(ps)
	return ps
}

func (o *Origin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/_origin/stats" {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(map[string]int64{"requests": o.requests.Load()})
		return
	}
	o.requests.Add(1)
	if o.opts.Latency > 0 {
		select {
		case <-time.After(o.opts.Latency):
		case <-r.Context().Done():
			return
		}
	}
	w.Header().Set("Server", "meshcdn-demo-origin")
	if strings.HasPrefix(r.URL.Path, "/api/") {
		o.api(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if o.fsys != nil {
		o.serveDir(w, r)
		return
	}
	p := r.URL.Path
	if strings.HasSuffix(p, "/") {
		p += "index.html"
	}
	f, ok := o.files[p]
	if !ok {
		w.Header().Set("Cache-Control", "max-age=10")
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Type", f.ctype)
	h.Set("ETag", f.etag)
	if f.cc != "" {
		h.Set("Cache-Control", f.cc)
	}
	http.ServeContent(w, r, "", f.modTime, bytes.NewReader(f.data))
}

func (o *Origin) serveDir(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(path.Clean(r.URL.Path), "/")
	if name == "" {
		name = "."
	}
	st, err := fs.Stat(o.fsys, name)
	if err == nil && st.IsDir() {
		name = path.Join(name, "index.html")
		st, err = fs.Stat(o.fsys, name)
	}
	if err != nil {
		http.NotFound(w, r)
		return
	}
	f, err := o.fsys.Open(name)
	if err != nil {
		http.Error(w, "cannot open file", http.StatusInternalServerError)
		return
	}
	defer f.Close()
	rs, ok := f.(interface {
		Read([]byte) (int, error)
		Seek(int64, int) (int64, error)
	})
	if !ok {
		http.Error(w, "cannot seek file", http.StatusInternalServerError)
		return
	}
	w.Header().Set("ETag", fmt.Sprintf(`"%x-%x"`, st.ModTime().UnixNano(), st.Size()))
	w.Header().Set("Cache-Control", fmt.Sprintf("public, max-age=%d", int(o.opts.MaxAge.Seconds())))
	http.ServeContent(w, r, name, st.ModTime(), rs)
}

func (o *Origin) api(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	switch r.URL.Path {
	case "/api/time":
		h.Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"time": time.Now().UTC().Format(time.RFC3339Nano),
			"uptime_seconds": int(time.Since(o.started).Seconds())})
	case "/api/echo":
		h.Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"method": r.Method, "uri": r.RequestURI, "host": r.Host,
			"headers": r.Header})
	case "/api/form":
		if r.Method != http.MethodPost {
			h.Set("Allow", "POST")
			http.Error(w, "POST a form here", http.StatusMethodNotAllowed)
			return
		}
		if err := r.ParseForm(); err != nil {
			http.Error(w, "bad form: "+err.Error(), http.StatusBadRequest)
			return
		}
		h.Set("Content-Type", "text/html; charset=utf-8")
		var b strings.Builder
		b.WriteString("<!doctype html><title>Thanks</title><h1>Received</h1><ul>")
		keys := make([]string, 0, len(r.PostForm))
		for k := range r.PostForm {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "<li>%s = %s</li>", html.EscapeString(k), html.EscapeString(r.PostForm.Get(k)))
		}
		b.WriteString("</ul>")
		_, _ = w.Write([]byte(b.String()))
	default:
		http.NotFound(w, r)
	}
}

// sampleSite generates the demo site. Its content is deterministic, so every
// origin process serves identical bytes and validators.
func sampleSite(maxAge time.Duration) map[string]file {
	mod := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cc := fmt.Sprintf("public, max-age=%d", int(maxAge.Seconds()))
	files := map[string]file{}
	add := func(p, ctype string, data []byte, cc string) {
		h := fnv.New64a()
		_, _ = h.Write(data)
		files[p] = file{data: data, ctype: ctype, etag: fmt.Sprintf(`"%016x"`, h.Sum64()), modTime: mod, cc: cc}
	}
	add("/index.html", "text/html; charset=utf-8", []byte(indexHTML), "public, max-age=60")
	add("/css/site.css", "text/css; charset=utf-8", []byte(siteCSS), cc)
	add("/js/app.js", "text/javascript; charset=utf-8", []byte(appJS), cc)
	add("/img/logo.png", "image/png", logoPNG(), cc)
	// Served without Cache-Control: the edge's heuristic freshness applies.
	add("/img/banner.png", "image/png", bannerPNG(), "")
	add("/media/sample.mp4", "video/mp4", syntheticMedia(VideoSize), cc)
	return files
}

func logoPNG() []byte {
	img := image.NewRGBA(image.Rect(0, 0, 64, 64))
	for y := range 64 {
		for x := range 64 {
			img.Set(x, y, color.RGBA{uint8(x * 4), uint8(y * 4), 180, 255})
		}
	}
	var b bytes.Buffer
	_ = png.Encode(&b, img)
	return b.Bytes()
}

func bannerPNG() []byte {
	img := image.NewRGBA(image.Rect(0, 0, 480, 120))
	for y := range 120 {
		for x := range 480 {
			img.Set(x, y, color.RGBA{uint8(x / 2), 90, uint8(y * 2), 255})
		}
	}
	var b bytes.Buffer
	_ = png.Encode(&b, img)
	return b.Bytes()
}

// syntheticMedia is n deterministic pseudo-random bytes, served as video/mp4 to
// exercise large-object streaming and Range; it is not a playable video.
func syntheticMedia(n int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

const indexHTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>meshcdn demo origin</title>
<link rel="stylesheet" href="/css/site.css">
</head>
<body>
<header><img src="/img/logo.png" alt="logo" width="64" height="64"><h1>meshcdn demo site</h1></header>
<p>Static files (this page, <a href="/css/site.css">CSS</a>, <a href="/js/app.js">JS</a>,
<a href="/img/banner.png">images</a>, <a href="/media/sample.mp4">media</a>) are served from the edge cache.</p>
<p>Dynamic endpoints go straight to the origin: <a href="/api/time">/api/time</a>,
<a href="/api/echo">/api/echo</a>.</p>
<form method="post" action="/api/form"><input name="comment"><button>Send</button></form>
<img src="/img/banner.png" alt="banner">
<p id="clock"></p>
<script src="/js/app.js"></script>
</body>
</html>
`

const siteCSS = `body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 48rem; color: #222; }
header { display: flex; align-items: center; gap: 1rem; }
img { max-width: 100%; }
`

const appJS = `// Asks the dynamic endpoint for the time: it is never cached.
fetch('/api/time').then(r => r.json()).then(t => {
  document.getElementById('clock').textContent = 'Origin time: ' + t.time;
});
`
