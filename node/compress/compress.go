// Package compress is a site's compression at the edge: which coding a
// client gets (Brotli first, then zstd, then gzip, among those the site
// enables and the client accepts), which responses are worth compressing
// (listed text types, within a size window, not encoded already, no
// no-transform), and the streaming encoders (andybalholm/brotli,
// klauspost/compress for gzip and zstd), each with bounded memory.
//
// compress knows nothing of caches, origins or peers.
package compress

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/meshcdn/meshcdn/internal/units"
)

// Config is a site's compression, as written in its YAML.
type Config struct {
	// Gzip and Brotli default to true, Zstd to false.
	Gzip   *bool `yaml:"gzip"`
	Brotli *bool `yaml:"brotli"`
	Zstd   bool  `yaml:"zstd"`
	// Types are the media types compressed ("text/*" matches every text
	// type). Default: DefaultTypes.
	Types []string `yaml:"types"`
	// MinSize and MaxSize bound the bodies compressed. Default 1KiB and
	// 10MiB (Alibaba Cloud CDN's window).
	MinSize units.Size `yaml:"min_size"`
	MaxSize units.Size `yaml:"max_size"`
}

// DefaultTypes are the media types compressed when a site lists none.
var DefaultTypes = []string{"text/*", "application/javascript", "application/x-javascript", "application/json",
	"application/ld+json", "application/manifest+json", "application/xml", "application/rss+xml", "application/atom+xml",
	"application/xhtml+xml", "application/wasm", "image/svg+xml", "image/x-icon", "image/vnd.microsoft.icon", "image/bmp",
	"image/tiff", "font/ttf", "font/otf", "application/vnd.ms-fontobject"}

// Codings, in the order of preference.
const (
	Brotli = "br"
	Zstd   = "zstd"
	Gzip   = "gzip"
)

// Policy is a compiled Config. It is immutable.
type Policy struct {
	codings          []string // enabled, by preference
	types            []string // exact media types
	prefixes         []string // "text/" of "text/*"
	minSize, maxSize int64
}

// Compile checks c; errors name the field.
func (c Config) Compile() (*Policy, error) {
	p := &Policy{minSize: int64(c.MinSize), maxSize: int64(c.MaxSize)}
	if c.Brotli == nil || *c.Brotli {
		p.codings = append(p.codings, Brotli)
	}
	if c.Zstd {
		p.codings = append(p.codings, Zstd)
	}
	if c.Gzip == nil || *c.Gzip {
		p.codings = append(p.codings, Gzip)
	}
	var errs []error
	if len(p.codings) == 0 {
		errs = append(errs, errors.New("compression: gzip, brotli and zstd are all off"))
	}
	if p.minSize == 0 {
		p.minSize = 1 << 10
	}
	if p.maxSize == 0 {
		p.maxSize = 10 << 20
	}
	if p.minSize < 0 || p.maxSize < p.minSize {
		errs = append(errs, fmt.Errorf("compression.max_size: %s is below min_size %s", units.Size(p.maxSize), units.Size(p.minSize)))
	}
	types := c.Types
	if len(types) == 0 {
		types = DefaultTypes
	}
	for i, t := range types {
		t = strings.ToLower(strings.TrimSpace(t))
		major, minor, ok := strings.Cut(t, "/")
		switch {
		case !ok || major == "" || minor == "" || strings.ContainsAny(t, " ;,") || (strings.Contains(minor, "*") && minor != "*"):
			errs = append(errs, fmt.Errorf("compression.types[%d]: %q is not a media type (text/css, or text/*)", i, types[i]))
		case minor == "*":
			p.prefixes = append(p.prefixes, major+"/")
		default:
			p.types = append(p.types, t)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return p, nil
}

// Negotiate returns the coding a client with these Accept-Encoding values
// gets: the enabled coding it accepts with the highest q, the site's
// preference breaking ties (Brotli, zstd, gzip); "" for none.
func (p *Policy) Negotiate(acceptEncoding []string) string {
	q := map[string]float64{}
	star := -1.0
	for _, line := range acceptEncoding {
		for item := range strings.SplitSeq(line, ",") {
			name, params, _ := strings.Cut(item, ";")
			name = strings.ToLower(strings.TrimSpace(name))
			weight := 1.0
			for param := range strings.SplitSeq(params, ";") {
				k, v, ok := strings.Cut(strings.TrimSpace(param), "=")
				if ok && strings.EqualFold(strings.TrimSpace(k), "q") {
					if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil && f >= 0 && f <= 1 {
						weight = f
					}
				}
			}
			switch name {
			case "*":
				star = weight
			case "x-gzip":
				q[Gzip] = weight
			case "":
			default:
				q[name] = weight
			}
		}
	}
	best, bestQ := "", 0.0
	for _, c := range p.codings {
		w, ok := q[c]
		if !ok && star >= 0 {
			w, ok = star, true
		}
		if ok && w > bestQ {
			best, bestQ = c, w
		}
	}
	return best
}

// Compressible reports whether a response of status with header h and a
// body of size bytes (-1: not known yet) is worth compressing: a 200 of a
// listed type, not encoded already, no no-transform, and a size within the
// window (an unknown size is let through: the caller stops storing past
// MaxSize).
func (p *Policy) Compressible(status int, h http.Header, size int64) bool {
	if status != http.StatusOK || (size >= 0 && (size < p.minSize || size > p.maxSize)) {
		return false
	}
	if ce := strings.TrimSpace(h.Get("Content-Encoding")); ce != "" && !strings.EqualFold(ce, "identity") {
		return false
	}
	if NoTransform(h) {
		return false
	}
	mt, _, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil {
		return false
	}
	return slices.Contains(p.types, mt) || slices.ContainsFunc(p.prefixes, func(pre string) bool { return strings.HasPrefix(mt, pre) })
}

// MaxSize is the largest body compressed.
func (p *Policy) MaxSize() int64 { return p.maxSize }

// NoTransform reports whether Cache-Control in h says no-transform (RFC
// 9111 §5.2.1.6, §5.2.2.6): the content must reach the client as it is.
func NoTransform(h http.Header) bool {
	for _, v := range h.Values("Cache-Control") {
		for d := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(d), "no-transform") {
				return true
			}
		}
	}
	return false
}

// Writer is a streaming encoder.
type Writer interface {
	io.WriteCloser
	// Flush sends what it holds of the data written so far.
	Flush() error
}

// Quality settings: levels whose memory stays bounded per stream (Brotli
// quality 5 with a 4 MiB window, gzip level 6, zstd's default speed with a
// 1 MiB window) and whose speed suits compressing on the way to a client.
const (
	brotliQuality = 5
	brotliWindow  = 22
	gzipLevel     = 6
	zstdWindow    = 1 << 20
)

// NewWriter returns an encoder of coding writing to w.
func NewWriter(coding string, w io.Writer) (Writer, error) {
	switch coding {
	case Brotli:
		return brotli.NewWriterOptions(w, brotli.WriterOptions{Quality: brotliQuality, LGWin: brotliWindow}), nil
	case Gzip:
		return gzip.NewWriterLevel(w, gzipLevel)
	case Zstd:
		return zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1),
			zstd.WithWindowSize(zstdWindow))
	}
	return nil, fmt.Errorf("compress: unknown coding %q", coding)
}

// WeakETag returns the weak form of an entity tag: a compressed
// representation is not byte-for-byte the origin's.
func WeakETag(etag string) string {
	if etag == "" || strings.HasPrefix(etag, "W/") {
		return etag
	}
	return "W/" + etag
}
