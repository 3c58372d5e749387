package site

import (
	"net/url"
	"testing"
)

func TestNormalizePath(t *testing.T) {
	for _, c := range []struct {
		in    string
		merge bool
		want  string
	}{
		{"/static/../dyn/x", false, "/dyn/x"},
		{"/static/%2e%2e/dyn/x", false, "/dyn/x"},
		{"/static/%2E./dyn/x", false, "/dyn/x"},
		{"/static/.%2e/dyn/x", false, "/dyn/x"},
		{"/a/./b/.", false, "/a/b/"},
		{"/a/b/..", false, "/a/"},
		{"/../../etc/passwd", false, "/etc/passwd"},
		{"/..", false, "/"},
		{"/a//b", false, "/a//b"},
		{"/a//b", true, "/a/b"},
		{"//dyn/x", true, "/dyn/x"},
		{"/a/b//", true, "/a/b/"},
		{"/a//../b", false, "/a/b"},
		{"/v1.2/app.min.js", true, "/v1.2/app.min.js"},
		{"/...", false, "/..."},
		{"/a/%2e%2e%2e/b", false, "/a/%2e%2e%2e/b"},
		{"/a%2fb/../c", false, "/c"},
		{"/plain/path.css", true, "/plain/path.css"},
		{"*", true, "*"},
	} {
		if got := NormalizePath(c.in, c.merge); got != c.want {
			t.Errorf("NormalizePath(%q, %v) = %q, want %q", c.in, c.merge, got, c.want)
		}
	}
}

// The common path (a file with an extension, no dot segment) is returned as
// it is, without allocating: this runs on every request.
func TestNormalizePathCommonCase(t *testing.T) {
	p := "/static/v1.2/app.min.js"
	if n := testing.AllocsPerRun(100, func() { _ = NormalizePath(p, true) }); n != 0 {
		t.Errorf("%v allocations for %s", n, p)
	}
}

func TestSetPath(t *testing.T) {
	u := &url.URL{}
	if err := SetPath(u, "/a%2Fb/x"); err != nil || u.Path != "/a/b/x" || u.EscapedPath() != "/a%2Fb/x" {
		t.Errorf("SetPath kept %q %q (%v)", u.Path, u.EscapedPath(), err)
	}
	if err := SetPath(u, "/bad%zz"); err == nil {
		t.Error("a bad escape was accepted")
	}
}
