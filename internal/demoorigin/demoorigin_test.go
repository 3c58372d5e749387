package demoorigin

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func get(t *testing.T, srv *httptest.Server, method, path string, hdr ...string) (*http.Response, string) {
	t.Helper()
	var body io.Reader
	if method == "POST" {
		body = strings.NewReader(url.Values{"comment": {"<hi>"}}.Encode())
	}
	req, _ := http.NewRequest(method, srv.URL+path, body)
	if method == "POST" {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestSampleSite(t *testing.T) {
	o := New(Options{})
	srv := httptest.NewServer(o)
	defer srv.Close()
	for _, p := range []string{"/", "/css/site.css", "/js/app.js", "/img/logo.png", "/media/sample.mp4"} {
		resp, _ := get(t, srv, "GET", p)
		if resp.StatusCode != 200 || resp.Header.Get("ETag") == "" || resp.Header.Get("Last-Modified") == "" ||
			!strings.Contains(resp.Header.Get("Cache-Control"), "max-age") {
			t.Errorf("%s: %d %v", p, resp.StatusCode, resp.Header)
		}
	}
	if resp, body := get(t, srv, "GET", "/media/sample.mp4"); len(body) != VideoSize || resp.Header.Get("Content-Type") != "video/mp4" {
		t.Errorf("media: %d bytes %q", len(body), resp.Header.Get("Content-Type"))
	}
	if resp, _ := get(t, srv, "GET", "/img/banner.png"); resp.Header.Get("Cache-Control") != "" {
		t.Errorf("banner should have no Cache-Control: %q", resp.Header.Get("Cache-Control"))
	}
	resp, _ := get(t, srv, "GET", "/css/site.css")
	if r, _ := get(t, srv, "GET", "/css/site.css", "If-None-Match", resp.Header.Get("ETag")); r.StatusCode != 304 {
		t.Errorf("conditional: %d", r.StatusCode)
	}
	if r, body := get(t, srv, "GET", "/media/sample.mp4", "Range", "bytes=0-9"); r.StatusCode != 206 || len(body) != 10 {
		t.Errorf("range: %d %d", r.StatusCode, len(body))
	}
	for _, p := range []string{"/api/time", "/api/echo"} {
		if r, _ := get(t, srv, "GET", p); r.StatusCode != 200 || r.Header.Get("Cache-Control") != "no-store" {
			t.Errorf("%s: %d %q", p, r.StatusCode, r.Header.Get("Cache-Control"))
		}
	}
	if r, body := get(t, srv, "POST", "/api/form"); r.StatusCode != 200 || !strings.Contains(body, "comment = &lt;hi&gt;") {
		t.Errorf("form: %d %q", r.StatusCode, body)
	}
	if r, _ := get(t, srv, "GET", "/api/form"); r.StatusCode != 405 {
		t.Errorf("GET form: %d", r.StatusCode)
	}
	before := o.Requests()
	_, body := get(t, srv, "GET", "/_origin/stats")
	var st struct{ Requests int64 }
	if err := json.Unmarshal([]byte(body), &st); err != nil || st.Requests != before || o.Requests() != before {
		t.Errorf("stats %q (counted %d)", body, before)
	}
}

func TestDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "docs"), 0o755); err != nil {
		t.Fatal(err)
	}
	_ = os.WriteFile(filepath.Join(dir, "docs", "index.html"), []byte("<h1>docs</h1>"), 0o644)
	_ = os.WriteFile(filepath.Join(dir, "a.txt"), []byte("hello"), 0o644)
	srv := httptest.NewServer(New(Options{Dir: dir}))
	defer srv.Close()
	if r, body := get(t, srv, "GET", "/a.txt"); r.StatusCode != 200 || body != "hello" || r.Header.Get("ETag") == "" {
		t.Errorf("file: %d %q", r.StatusCode, body)
	}
	if _, body := get(t, srv, "GET", "/docs/"); body != "<h1>docs</h1>" {
		t.Errorf("index: %q", body)
	}
	if r, _ := get(t, srv, "GET", "/../etc/passwd"); r.StatusCode != 404 {
		t.Errorf("escape: %d", r.StatusCode)
	}
}
