package compress

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

func policy(t *testing.T, c Config) *Policy {
	t.Helper()
	p, err := c.Compile()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestNegotiate(t *testing.T) {
	all := policy(t, Config{Zstd: true})
	noBrotli := false
	gz := policy(t, Config{Brotli: &noBrotli})
	for _, tt := range []struct {
		p    *Policy
		ae   string
		want string
	}{
		{all, "gzip, deflate, br", "br"}, {all, "br;q=0.5, gzip", "gzip"}, {all, "zstd, gzip", "zstd"},
		{all, "x-gzip", "gzip"}, {all, "*", "br"}, {all, "*, br;q=0", "zstd"}, {all, "identity", ""},
		{all, "", ""}, {all, "gzip;q=0", ""}, {all, "GZIP ; Q=1", "gzip"}, {gz, "br, gzip", "gzip"}, {gz, "br", ""},
		{all, "br;q=bogus", "br"},
	} {
		if got := tt.p.Negotiate([]string{tt.ae}); got != tt.want {
			t.Errorf("Accept-Encoding %q: %q; want %q", tt.ae, got, tt.want)
		}
	}
}

func TestCompressible(t *testing.T) {
	p := policy(t, Config{})
	h := func(kv ...string) http.Header {
		out := http.Header{}
		for i := 0; i+1 < len(kv); i += 2 {
			out.Set(kv[i], kv[i+1])
		}
		return out
	}
	for _, tt := range []struct {
		status int
		h      http.Header
		size   int64
		want   bool
	}{
		{200, h("Content-Type", "text/css; charset=utf-8"), 20_000, true},
		{200, h("Content-Type", "application/json"), -1, true},
		{200, h("Content-Type", "image/svg+xml"), 5000, true},
		{200, h("Content-Type", "text/css"), 500, false},
		{200, h("Content-Type", "text/css"), 11 << 20, false},
		{200, h("Content-Type", "image/png"), 5000, false},
		{200, h("Content-Type", "text/css", "Content-Encoding", "gzip"), 5000, false},
		{200, h("Content-Type", "text/css", "Content-Encoding", "identity"), 5000, true},
		{200, h("Content-Type", "text/css", "Cache-Control", "public, No-Transform"), 5000, false},
		{206, h("Content-Type", "text/css"), 5000, false},
		{200, h(), 5000, false},
	} {
		if got := p.Compressible(tt.status, tt.h, tt.size); got != tt.want {
			t.Errorf("%d %v %d: %v; want %v", tt.status, tt.h, tt.size, got, tt.want)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	off := false
	for _, tt := range []struct {
		c    Config
		want string
	}{
		{Config{Gzip: &off, Brotli: &off}, "gzip, brotli and zstd are all off"},
		{Config{MinSize: 2048, MaxSize: 1024}, "max_size: 1.0KiB is below min_size 2.0KiB"},
		{Config{Types: []string{"text"}}, `types[0]: "text" is not a media type`},
		{Config{Types: []string{"text/c*"}}, `types[0]: "text/c*"`},
	} {
		if _, err := tt.c.Compile(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: %v; want %q", tt.c, err, tt.want)
		}
	}
}

// TestWriters: each encoder's output decodes, through another library's
// reader where one exists, to what it was given, flushed midway too.
func TestWriters(t *testing.T) {
	text := bytes.Repeat([]byte("meshcdn compresses text at the edge. "), 2000)
	for _, coding := range []string{Brotli, Gzip, Zstd} {
		var out bytes.Buffer
		w, err := NewWriter(coding, &out)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = w.Write(text[:1000])
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		_, _ = w.Write(text[1000:])
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		var r io.Reader
		switch coding {
		case Brotli:
			r = brotli.NewReader(&out)
		case Gzip:
			r, err = gzip.NewReader(&out)
		case Zstd:
			var d *zstd.Decoder
			d, err = zstd.NewReader(&out)
			r = d
		}
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, text) {
			t.Errorf("%s: %d bytes back (%v); want %d", coding, len(got), err, len(text))
		}
	}
	if _, err := NewWriter("lzma", io.Discard); err == nil {
		t.Error("an unknown coding made a writer")
	}
	if WeakETag(`"a"`) != `W/"a"` || WeakETag(`W/"a"`) != `W/"a"` || WeakETag("") != "" {
		t.Error("WeakETag")
	}
}
