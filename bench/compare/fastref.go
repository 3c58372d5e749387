package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
)

// The fasthttp reference is the net/http reference's twin on
// github.com/valyala/fasthttp: the same objects from memory under the same
// header fields, and the pass-through through a fasthttp HostClient. Its
// row shows what a server on that stack reaches on the machine.
const fastReferencePort = 18608 // and its HTTPS listener at + tlsOffset

// serveFastReference is the fasthttp reference process: dir holds the
// origin's files and the certificate.
func serveFastReference(ctx context.Context, dir string) error {
	objects, err := readObjects(dir)
	if err != nil {
		return err
	}
	h := fastReferenceHandler(objects, fmt.Sprintf("127.0.0.1:%d", originPort))
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	if err != nil {
		return err
	}
	plain := &fasthttp.Server{Handler: h, ReadTimeout: 10 * time.Second, NoDefaultServerHeader: true}
	tlsServer := &fasthttp.Server{Handler: h, ReadTimeout: 10 * time.Second, NoDefaultServerHeader: true,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}}
	return runReference(ctx, fastReferencePort, func(ln net.Listener, secure bool) error {
		if secure {
			return tlsServer.Serve(tls.NewListener(ln, tlsServer.TLSConfig))
		}
		return plain.Serve(ln)
	}, func(ctx context.Context) error {
		return errors.Join(plain.ShutdownWithContext(ctx), tlsServer.ShutdownWithContext(ctx))
	})
}

// fastReferenceHandler answers objects' paths from memory and passes
// /pass/ to the origin at originAddr.
func fastReferenceHandler(objects map[string][]byte, originAddr string) fasthttp.RequestHandler {
	origin := &fasthttp.HostClient{Addr: originAddr, MaxConns: 128, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second}
	modified := time.Now().UTC().Format(http.TimeFormat)
	return func(c *fasthttp.RequestCtx) {
		path := string(c.Path())
		if strings.HasPrefix(path, "/pass/") {
			req := &c.Request
			req.Header.Del("Connection")
			req.Header.Set("X-Forwarded-For", c.RemoteIP().String())
			if err := origin.Do(req, &c.Response); err != nil {
				c.Error("origin: "+err.Error(), fasthttp.StatusBadGateway)
				return
			}
			c.Response.Header.Del("Connection")
			return
		}
		b, ok := objects[path]
		if !ok {
			c.NotFound()
			return
		}
		c.Response.Header.Set("Content-Type", "application/octet-stream")
		c.Response.Header.Set("Cache-Control", "public, max-age=86400")
		c.Response.Header.Set("Last-Modified", modified)
		c.SetBody(b)
	}
}

// readObjects reads the origin's objects, by path.
func readObjects(dir string) (map[string][]byte, error) {
	objects := map[string][]byte{}
	entries, err := os.ReadDir(filepath.Join(dir, "www", "obj"))
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, "www", "obj", e.Name()))
		if err != nil {
			return nil, err
		}
		objects["/obj/"+e.Name()] = b
	}
	return objects, nil
}
