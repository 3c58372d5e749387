package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// The reference is Go's own HTTP stack with nothing of a cache in it: a
// net/http server that answers /obj/ from memory, read once at start, and
// passes /pass/ to the origin through httputil.ReverseProxy. Its row shows
// what any server built on net/http reaches on the machine, beside nginx.
const referencePort = 18607 // and its HTTPS listener at + tlsOffset

// startReference runs a reference (stack net/http or fasthttp) in a
// process of its own (this program, re-executed with --reference and
// --stack), so its CPU and memory are counted apart.
func startReference(dir, stack string, port int) (*proc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	p, err := start(dir, "reference-"+strings.ReplaceAll(stack, "/", ""), self, "--reference", dir, "--stack", stack)
	if err != nil {
		return nil, err
	}
	if err := waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/obj/1k.bin", port), 10*time.Second); err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}

// serveReference is the reference process: dir holds the origin's files and
// the certificate.
func serveReference(ctx context.Context, dir string) error {
	objects, err := readObjects(dir)
	if err != nil {
		return err
	}
	origin, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", originPort))
	proxy := httputil.NewSingleHostReverseProxy(origin)
	proxy.Transport = &http.Transport{MaxIdleConnsPerHost: 128, DisableCompression: true}
	modified := []string{time.Now().UTC().Format(http.TimeFormat)}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/pass/") {
			proxy.ServeHTTP(w, r)
			return
		}
		b, ok := objects[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		hdr := w.Header()
		hdr["Content-Type"] = []string{"application/octet-stream"}
		hdr["Cache-Control"] = []string{"public, max-age=86400"}
		hdr["Last-Modified"] = modified
		hdr["Content-Length"] = []string{strconv.Itoa(len(b))}
		_, _ = w.Write(b)
	})
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	if err != nil {
		return err
	}
	plain := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	secure := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}}
	// HTTP/3 on the UDP port of the HTTPS listener, with quic-go's server.
	udp, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", referencePort+tlsOffset))
	if err != nil {
		return err
	}
	quick := &http3.Server{Handler: h, TLSConfig: http3.ConfigureTLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}})}
	h3err := make(chan error, 1)
	go func() { h3err <- quick.Serve(udp) }()
	err = runReference(ctx, referencePort, func(ln net.Listener, overTLS bool) error {
		if overTLS {
			return secure.ServeTLS(ln, "", "")
		}
		return plain.Serve(ln)
	}, func(ctx context.Context) error {
		return errors.Join(plain.Shutdown(ctx), secure.Shutdown(ctx), quick.Shutdown(ctx))
	})
	_ = quick.Close()
	_ = udp.Close()
	if serr := <-h3err; err == nil && serr != nil && !errors.Is(serr, http.ErrServerClosed) && !errors.Is(serr, quic.ErrServerClosed) && !errors.Is(serr, net.ErrClosed) {
		err = serr
	}
	return err
}

// runReference listens on a reference's HTTP port and its HTTPS port,
// serves each (serve is told which) until one fails or ctx ends, then
// shuts the servers down.
func runReference(ctx context.Context, port int, serve func(ln net.Listener, overTLS bool) error, shutdown func(context.Context) error) error {
	errc := make(chan error, 2)
	for _, secure := range []bool{false, true} {
		p := port
		if secure {
			p += tlsOffset
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			return err
		}
		go func() { errc <- serve(ln, secure) }()
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return shutdown(sctx)
}
