package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/internal/testutil"
	"github.com/meshcdn/meshcdn/node/origin"
	"github.com/meshcdn/meshcdn/node/site"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// tlsClient is an HTTPS client that reaches addr whatever the URL's host,
// trusting pool; protos are its ALPN protocols (HTTP/2 when it lists h2).
func tlsClient(addr string, pool *x509.CertPool, cfg *tls.Config, protos ...string) *http.Client {
	if cfg == nil {
		cfg = &tls.Config{}
	}
	cfg.RootCAs = pool
	cfg.NextProtos = protos
	tr := &http.Transport{
		TLSClientConfig: cfg,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
		ForceAttemptHTTP2: len(protos) > 0 && protos[0] == "h2",
	}
	if !tr.ForceAttemptHTTP2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// get sends a GET and reads the whole answer.
func get(t *testing.T, c *http.Client, url string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return send(t, c, req)
}

// send sends req with c and reads the whole body.
func send(t *testing.T, c *http.Client, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

// TestHTTPS: two sites with certificates of their own on one HTTPS
// listener: each server name gets its site's certificate, HTTP/2 is chosen
// by ALPN (HTTP/1.1 when the client offers only that), the second request
// is a hit, and the same object over cleartext HTTP is the same entry. The
// origin is told the client's scheme.
func TestHTTPS(t *testing.T) {
	var protos sync.Map
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		protos.Store(r.URL.Path, r.Header.Get("X-Forwarded-Proto"))
		w.Header().Set("Cache-Control", "max-age=600")
		_, _ = io.WriteString(w, "body of "+r.Host+r.URL.Path)
	})
	dir := t.TempDir()
	shop := testutil.WriteCert(t, dir, "shop", []string{"shop.example"}, testutil.CertOptions{})
	blog := testutil.WriteCert(t, dir, "blog", []string{"*.blog.example", "blog.example"}, testutil.CertOptions{RSA: true})
	n := startNode(t, nil, Config{HTTPSAddr: "127.0.0.1:0", Sites: []site.Config{
		{Hosts: []string{"shop.example"}, Origins: []site.OriginConfig{{URL: o.URL}},
			Certificates: []site.CertificateConfig{{CertFile: shop.CertFile, KeyFile: shop.KeyFile}}},
		{Hosts: []string{"blog.example", "*.blog.example"}, Origins: []site.OriginConfig{{URL: o.URL}},
			Certificates: []site.CertificateConfig{{CertFile: blog.CertFile, KeyFile: blog.KeyFile}}},
	}})
	pool := x509.NewCertPool()
	pool.AddCert(shop.Leaf)
	pool.AddCert(blog.Leaf)
	h2 := tlsClient(n.HTTPSAddr(), pool, nil, "h2", "http/1.1")
	h1 := tlsClient(n.HTTPSAddr(), pool, nil, "http/1.1")

	for _, tt := range []struct {
		host string
		cert testutil.Cert
	}{{"shop.example", shop}, {"www.blog.example", blog}} {
		resp, body := get(t, h2, "https://"+tt.host+"/app.js")
		if resp.Proto != "HTTP/2.0" || !resp.TLS.PeerCertificates[0].Equal(tt.cert.Leaf) || body != "body of "+tt.host+"/app.js" {
			t.Fatalf("%s: %s, certificate %v, %q", tt.host, resp.Proto, resp.TLS.PeerCertificates[0].DNSNames, body)
		}
		if cs := resp.Header.Get("Cache-Status"); !strings.Contains(cs, "fwd=uri-miss") {
			t.Errorf("%s first request: %s", tt.host, cs)
		}
		resp, _ = get(t, h1, "https://"+tt.host+"/app.js")
		if resp.Proto != "HTTP/1.1" || resp.Header.Get("Cache-Status") != "meshcdn; hit" {
			t.Errorf("%s over HTTP/1.1 on TLS: %s %s", tt.host, resp.Proto, resp.Header.Get("Cache-Status"))
		}
	}
	if p, _ := protos.Load("/app.js"); p != "https" {
		t.Errorf("the origin was told X-Forwarded-Proto %v", p)
	}
	// Cleartext HTTP shares the entry: no origin request.
	before := o.hits.Load()
	req, _ := http.NewRequest("GET", "http://"+n.HTTPAddr()+"/app.js", nil)
	req.Host = "shop.example"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("Cache-Status") != "meshcdn; hit" || o.hits.Load() != before {
		t.Errorf("over http: %s, origin asked %d more times", resp.Header.Get("Cache-Status"), o.hits.Load()-before)
	}
	// An unknown name has no certificate here (no default): the handshake fails.
	// A connection opened for one site does not reach another.
	req, _ = http.NewRequest("GET", "https://shop.example/app.js", nil)
	req.Host = "blog.example"
	resp, err = h2.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMisdirectedRequest || !strings.Contains(resp.Header.Get("Cache-Status"), "detail=misdirected") {
		t.Errorf("Host blog.example on a connection for shop.example: %d %s", resp.StatusCode, resp.Header.Get("Cache-Status"))
	}
	var shown int
	_, err = tlsClient(n.HTTPSAddr(), pool, &tls.Config{InsecureSkipVerify: true, VerifyConnection: func(cs tls.ConnectionState) error {
		shown += len(cs.PeerCertificates)
		return nil
	}}, "h2").Get("https://other.example/")
	if err == nil || shown != 0 {
		t.Errorf("a name no certificate covers: %v, %d certificates shown; want a failed handshake and none", err, shown)
	}
}

// TestHTTPSPolicy: a redirect site answers cleartext HTTP with 308 to the
// same URL on https, an only site with 403, and HSTS comes on HTTPS answers
// alone. TLS 1.1 and below are refused.
func TestHTTPSPolicy(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		_, _ = io.WriteString(w, "ok")
	})
	dir := t.TempDir()
	cert := testutil.WriteCert(t, dir, "default", []string{"r.example", "o.example", "a.example"}, testutil.CertOptions{})
	n := startNode(t, nil, Config{HTTPSAddr: "127.0.0.1:0", TLSCertFile: cert.CertFile, TLSKeyFile: cert.KeyFile,
		Sites: []site.Config{
			{Hosts: []string{"r.example"}, Origins: []site.OriginConfig{{URL: o.URL}}, HTTPS: "redirect",
				HSTS: &site.HSTSConfig{MaxAge: 365 * 86400 * 1e9, IncludeSubdomains: true, Preload: true}},
			{Hosts: []string{"o.example"}, Origins: []site.OriginConfig{{URL: o.URL}}, HTTPS: "only"},
			{Hosts: []string{"a.example"}, Origins: []site.OriginConfig{{URL: o.URL}}},
		}})
	_, port, _ := net.SplitHostPort(n.HTTPSAddr())
	plain := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	do := func(host, path string) *http.Response {
		req, _ := http.NewRequest("GET", "http://"+n.HTTPAddr()+path, nil)
		req.Host = host
		resp, err := plain.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	resp := do("R.example:8080", "/a/b.css?x=1&y=2")
	if want := "https://r.example:" + port + "/a/b.css?x=1&y=2"; resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != want ||
		resp.Header.Get("Strict-Transport-Security") != "" {
		t.Errorf("redirect site over http: %d %q (want %q), HSTS %q", resp.StatusCode, resp.Header.Get("Location"), want, resp.Header.Get("Strict-Transport-Security"))
	}
	if resp := do("o.example", "/x.css"); resp.StatusCode != http.StatusForbidden || !strings.Contains(resp.Header.Get("Cache-Status"), "detail=https-only") {
		t.Errorf("only site over http: %d %s", resp.StatusCode, resp.Header.Get("Cache-Status"))
	}
	if resp := do("a.example", "/x.css"); resp.StatusCode != http.StatusOK {
		t.Errorf("allow site over http: %d", resp.StatusCode)
	}
	c := tlsClient(n.HTTPSAddr(), cert.Pool, nil, "h2")
	for _, host := range []string{"r.example", "o.example"} {
		for range 2 { // a miss, then a hit: HSTS on both
			resp, _ := get(t, c, "https://"+host+"/x.css")
			want := ""
			if host == "r.example" {
				want = "max-age=31536000; includeSubDomains; preload"
			}
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Strict-Transport-Security") != want {
				t.Errorf("%s over https: %d, HSTS %q (want %q)", host, resp.StatusCode, resp.Header.Get("Strict-Transport-Security"), want)
			}
		}
	}
	for _, v := range []uint16{tls.VersionTLS10, tls.VersionTLS11} {
		old := tlsClient(n.HTTPSAddr(), cert.Pool, &tls.Config{MinVersion: v, MaxVersion: v}, "http/1.1")
		if _, err := old.Get("https://a.example/x.css"); err == nil || !strings.Contains(err.Error(), "version") {
			t.Errorf("%s: %v; want a refused handshake", tls.VersionName(v), err)
		}
	}
}

// TestHTTPSReload: a new certificate is served after a reload by the same
// process, with no failed request from clients meanwhile; a broken file
// keeps the certificate in use and raises meshcdn_tls_reload_failing.
// HTTP/3 serves what HTTPS serves throughout.
func TestHTTPSReload(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		_, _ = io.WriteString(w, "ok")
	})
	dir := t.TempDir()
	first := testutil.WriteCert(t, dir, "site", []string{"a.example"}, testutil.CertOptions{})
	second := testutil.WriteCert(t, t.TempDir(), "site", []string{"a.example"}, testutil.CertOptions{RSA: true})
	n := startNode(t, o, Config{HTTPSAddr: "127.0.0.1:0", HTTP3: true, TLSCertFile: first.CertFile, TLSKeyFile: first.KeyFile})
	pool := x509.NewCertPool() // clients trust both while the certificate changes under them
	pool.AddCert(first.Leaf)
	pool.AddCert(second.Leaf)
	// overH3 is the certificate a new HTTP/3 connection gets.
	overH3 := func() *x509.Certificate {
		resp, _ := get(t, h3Client(t, n.HTTP3Addr(), pool), "https://a.example/x.css")
		return resp.TLS.PeerCertificates[0]
	}
	if !overH3().Equal(first.Leaf) {
		t.Fatal("HTTP/3 does not serve the configured certificate")
	}
	var sent, failed atomic.Int64
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				c := tlsClient(n.HTTPSAddr(), pool, nil, "h2") // a new connection each time
				resp, err := c.Get("https://a.example/x.css")
				sent.Add(1)
				if err != nil || resp.StatusCode != http.StatusOK {
					failed.Add(1)
					t.Logf("request failed: %v", err)
				}
				if err == nil {
					resp.Body.Close()
				}
				c.CloseIdleConnections()
			}
		})
	}
	eventually(t, 10*time.Second, func() bool { return sent.Load() > 20 })
	for _, f := range []struct{ from, to string }{{second.CertFile, first.CertFile}, {second.KeyFile, first.KeyFile}} {
		b, _ := os.ReadFile(f.from)
		if err := os.WriteFile(f.to+".new", b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(f.to+".new", f.to); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.Reload(); err != nil {
		t.Fatal(err)
	}
	mark := sent.Load()
	eventually(t, 10*time.Second, func() bool { return sent.Load() > mark+20 })
	cancel()
	wg.Wait()
	if failed.Load() != 0 {
		t.Errorf("%d of %d requests failed across the reload", failed.Load(), sent.Load())
	}
	resp, _ := get(t, tlsClient(n.HTTPSAddr(), pool, nil, "h2"), "https://a.example/x.css")
	if !resp.TLS.PeerCertificates[0].Equal(second.Leaf) {
		t.Error("the new certificate is not served after the reload")
	}
	if !overH3().Equal(second.Leaf) {
		t.Error("the new certificate is not served over HTTP/3 after the reload")
	}

	if err := os.WriteFile(first.KeyFile, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := n.Reload(); err == nil {
		t.Error("a broken key file reloaded without an error")
	}
	resp, _ = get(t, tlsClient(n.HTTPSAddr(), pool, nil, "h2"), "https://a.example/x.css")
	if !resp.TLS.PeerCertificates[0].Equal(second.Leaf) || !overH3().Equal(second.Leaf) {
		t.Error("a broken key file replaced the certificate in use")
	}
	if v := counterValue(t, n, "meshcdn_tls_reload_failing"); v != 1 {
		t.Errorf("meshcdn_tls_reload_failing = %v after a broken file; want 1", v)
	}
}

// TestHTTPSResumption: a session begun with one member resumes on another:
// every member derives the session ticket keys from the gossip key, for
// HTTP/3 as for HTTPS.
func TestHTTPSResumption(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		_, _ = io.WriteString(w, "ok")
	})
	cert := testutil.WriteCert(t, t.TempDir(), "site", []string{"a.example"}, testutil.CertOptions{})
	nodes := startCluster(t, o, 2, func(c *Config) {
		c.HTTPSAddr, c.TLSCertFile, c.TLSKeyFile, c.HTTP3 = "127.0.0.1:0", cert.CertFile, cert.KeyFile, true
		c.Mesh.GossipKeys = [][]byte{[]byte("0123456789abcdef0123456789abcdef")}
	})
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		cache := tls.NewLRUClientSessionCache(8)
		var resumed []bool
		for _, n := range []*Node{nodes[0], nodes[1], nodes[0]} {
			c := tlsClient(n.HTTPSAddr(), cert.Pool, &tls.Config{ClientSessionCache: cache, MaxVersion: v}, "h2")
			resp, _ := get(t, c, "https://a.example/x.css")
			resumed = append(resumed, resp.TLS.DidResume)
			c.CloseIdleConnections()
		}
		if resumed[0] || !resumed[1] || !resumed[2] {
			t.Errorf("%s: resumed %v; want a full handshake, then resumption on the other member and back", tls.VersionName(v), resumed)
		}
	}
	tickets := &ticketWatch{ClientSessionCache: tls.NewLRUClientSessionCache(8), put: make(chan struct{}, 16)}
	var resumed []bool
	for _, n := range []*Node{nodes[0], nodes[1], nodes[0]} {
		var conn *quic.Conn
		tr := &http3.Transport{TLSClientConfig: &tls.Config{RootCAs: cert.Pool, ClientSessionCache: tickets},
			Dial: func(ctx context.Context, _ string, tc *tls.Config, qc *quic.Config) (*quic.Conn, error) {
				c, err := quic.DialAddr(ctx, n.HTTP3Addr(), tc, qc)
				conn = c
				return c, err
			}}
		get(t, &http.Client{Transport: tr, Timeout: 10 * time.Second}, "https://a.example/x.css")
		resumed = append(resumed, conn.ConnectionState().TLS.DidResume)
		select { // QUIC may bring the session ticket after the answer
		case <-tickets.put:
		case <-time.After(5 * time.Second):
			t.Fatal("no session ticket over HTTP/3 within 5 s")
		}
		_ = tr.Close()
	}
	if resumed[0] || !resumed[1] || !resumed[2] {
		t.Errorf("HTTP/3: resumed %v; want a full handshake, then resumption on the other member and back", resumed)
	}
	if v := counterValue(t, nodes[1], "meshcdn_tls_handshakes_total"); v < 2 {
		t.Errorf("meshcdn_tls_handshakes_total = %v on the second member", v)
	}
}

// ticketWatch is a client session cache that tells when a ticket is put.
type ticketWatch struct {
	tls.ClientSessionCache
	put chan struct{}
}

func (c *ticketWatch) Put(key string, cs *tls.ClientSessionState) {
	c.ClientSessionCache.Put(key, cs)
	if cs != nil {
		c.put <- struct{}{}
	}
}

// TestHTTPSFraming: HTTP/1.1 over TLS gets the framing checks of cleartext
// HTTP: Content-Length with Transfer-Encoding is 400 and the connection is
// closed, so nothing smuggled behind it is read.
func TestHTTPSFraming(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	cert := testutil.WriteCert(t, t.TempDir(), "site", []string{"a.example"}, testutil.CertOptions{})
	n := startNode(t, o, Config{HTTPSAddr: "127.0.0.1:0", TLSCertFile: cert.CertFile, TLSKeyFile: cert.KeyFile})
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", n.HTTPSAddr(),
		&tls.Config{RootCAs: cert.Pool, ServerName: "a.example", NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, err = io.WriteString(c, "POST /api/x HTTP/1.1\r\nHost: a.example\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"+
		"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a.example\r\n\r\n")
	if err != nil {
		t.Fatal(err)
	}
	all, _ := io.ReadAll(c) // until the server closes
	if got := string(all); !strings.HasPrefix(got, "HTTP/1.1 400") || strings.Count(got, "HTTP/1.1 ") != 1 {
		t.Errorf("ambiguous framing over TLS answered:\n%s", got)
	}
}

// TestOriginProtocol: origin_protocol: https asks the origins over https
// whatever their URLs say, and the origin sees the client's scheme.
func TestOriginProtocol(t *testing.T) {
	o := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		_, _ = io.WriteString(w, "over TLS, for "+r.Header.Get("X-Forwarded-Proto"))
	}))
	o.Config.ErrorLog = log.New(io.Discard, "", 0) // connections the node drops at its shutdown
	o.StartTLS()
	t.Cleanup(o.Close)
	roots := x509.NewCertPool()
	roots.AddCert(o.Certificate())
	n := startNode(t, nil, Config{Origin: origin.Config{RootCAs: roots}, Sites: []site.Config{{
		Hosts: []string{"a.example"}, Origins: []site.OriginConfig{{URL: "http://" + o.Listener.Addr().String()}},
		OriginProtocol: "https", OriginHost: "origin"}}})
	r := do(t, n, "GET", "/x.css", "Host", "a.example")
	if r.body != "over TLS, for http" || !strings.Contains(r.cacheStatus(), "stored") {
		t.Errorf("origin_protocol: https: %q %s", r.body, r.cacheStatus())
	}
}

// TestOriginsFor: the origins a site asks, by origin_protocol and the
// client's scheme; follow refuses origins with a port.
func TestOriginsFor(t *testing.T) {
	for _, tt := range []struct {
		protocol, scheme, want string
	}{
		{"", "https", "http://o.example"}, {"http", "https", "http://o.example"}, {"https", "http", "https://o.example"},
		{"follow", "http", "http://o.example"}, {"follow", "https", "https://o.example"},
	} {
		s, err := site.Config{Hosts: []string{"a.example"}, Origins: []site.OriginConfig{{URL: "http://o.example"}}, OriginProtocol: tt.protocol}.Compile()
		if err != nil {
			t.Fatal(err)
		}
		if got := s.OriginsFor(tt.scheme)[0].URL.String(); got != tt.want || s.Origins[0].URL.String() != "http://o.example" {
			t.Errorf("%s for %s: %s; want %s", tt.protocol, tt.scheme, got, tt.want)
		}
	}
	_, err := site.Config{Hosts: []string{"a.example"}, Origins: []site.OriginConfig{{URL: "http://o.example:8080"}}, OriginProtocol: "follow"}.Compile()
	if err == nil || !strings.Contains(err.Error(), "origins[0]: http://o.example:8080 names port 8080") {
		t.Errorf("follow with a port: %v", err)
	}
}

// TestHTTPSReloadOnChange: a certificate file that changes is served
// without a SIGHUP (the files are looked at every 10 s, 100 ms in the fast
// profile).
func TestHTTPSReloadOnChange(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	dir := t.TempDir()
	first := testutil.WriteCert(t, dir, "site", []string{"a.example"}, testutil.CertOptions{})
	n := startNode(t, o, Config{HTTPSAddr: "127.0.0.1:0", TLSCertFile: first.CertFile, TLSKeyFile: first.KeyFile,
		Mesh: &MeshConfig{PeerAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0", Fast: true}})
	second := testutil.WriteCert(t, t.TempDir(), "site", []string{"a.example"}, testutil.CertOptions{})
	pool := x509.NewCertPool()
	pool.AddCert(first.Leaf)
	pool.AddCert(second.Leaf)
	for _, f := range [][2]string{{second.KeyFile, first.KeyFile}, {second.CertFile, first.CertFile}} {
		b, err := os.ReadFile(f[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f[1]+".new", b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(f[1]+".new", f[1]); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, func() bool {
		c := tlsClient(n.HTTPSAddr(), pool, nil, "h2")
		defer c.CloseIdleConnections()
		resp, err := c.Get("https://a.example/x.css")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.TLS.PeerCertificates[0].Equal(second.Leaf)
	})
}

// TestHTTP2Conformance runs h2spec (the HTTP/2 conformance suite, pinned
// in tools/go.mod) against the HTTPS listener and against a bare Go
// HTTP/2 server over TLS, side by side: the edge passes at least as many
// of its tests as Go's own server does, and at least 141 of 145 (the four
// left are frame and header checks that Go's HTTP/2 server answers with a
// response, not the stream or connection error RFC 9113 asks for).
func TestHTTP2Conformance(t *testing.T) {
	h2spec := tool(t, "h2spec")
	// A body larger than the small flow-control windows some tests set:
	// with less, h2spec skips them.
	body := strings.Repeat("h2spec ", 1024)
	echo := func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, body)
	}
	o := newOrigin(t, echo)
	cert := testutil.WriteCert(t, t.TempDir(), "h2", []string{"127.0.0.1"}, testutil.CertOptions{})
	n := startNode(t, o, Config{HTTPSAddr: "127.0.0.1:0", TLSCertFile: cert.CertFile, TLSKeyFile: cert.KeyFile})
	bare := httptest.NewUnstartedServer(http.HandlerFunc(echo))
	bare.EnableHTTP2 = true
	bare.StartTLS()
	t.Cleanup(bare.Close)
	run := func(addr string) (passed, total int, report string) {
		host, port, _ := net.SplitHostPort(addr)
		// A long timeout per test: on a loaded machine a slow answer is not
		// a wrong one.
		out, _ := exec.Command(h2spec, "-h", host, "-p", port, "-t", "-k", "-o", "5").CombinedOutput()
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		var skipped, failed int
		if _, err := fmt.Sscanf(lines[len(lines)-1], "%d tests, %d passed, %d skipped, %d failed", &total, &passed, &skipped, &failed); err != nil {
			t.Fatalf("h2spec against %s: %v\n%s", addr, err, out)
		}
		return passed, total, string(out)
	}
	type result struct {
		passed, total int
		report        string
	}
	results := make(chan result, 1)
	go func() {
		p, tot, r := run(strings.TrimPrefix(bare.URL, "https://"))
		results <- result{p, tot, r}
	}()
	passed, total, report := run(n.HTTPSAddr())
	goServer := <-results
	t.Logf("h2spec: the edge passed %d of %d, Go's own HTTP/2 server %d of %d", passed, total, goServer.passed, goServer.total)
	if total != 145 || passed < 141 || passed < goServer.passed {
		t.Errorf("the edge passed %d of %d h2spec tests; want at least 141 of 145 and Go's own server's %d\n%s", passed, total, goServer.passed, report)
	}
}
