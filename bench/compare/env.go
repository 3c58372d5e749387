package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"
)

// target is one server under test as the measurements see it.
type target struct {
	name        string
	http, https string                        // base URLs; https "" when it has none
	procs       []*proc                       // whose CPU and memory count
	path        func(p string) (string, bool) // the URL of a path, on the node a request lands on
	purge       func(ctx context.Context, path string) (time.Duration, error)
	reference   bool   // Go's HTTP stack without a cache: hits and pass-through only
	h2          bool   // its HTTPS listener speaks HTTP/2
	h3          string // the UDP address of its HTTP/3 listener; "" when it has none
}

// env is every process the comparison started.
type env struct {
	origin  *proc
	all     []*proc
	targets []*target
}

func (e *env) stop() {
	for i := len(e.all) - 1; i >= 0; i-- {
		e.all[i].stop()
	}
}

// herdTargets name the herd's cold objects, one per server.
var herdTargets = []string{"nginx", "varnish", "meshcdn", "mesh"}

func startAll(bin, dir string) (*env, error) {
	e := &env{}
	fail := func(err error) (*env, error) {
		e.stop()
		return nil, err
	}
	data := map[string]any{"Dir": dir, "Port": originPort, "Origin": originPort, "TLSPort": nginxPort + tlsOffset}
	conf, err := writeTemplate(dir, "origin.conf", originConf, data)
	if err != nil {
		return fail(err)
	}
	if e.origin, err = start(dir, "origin", "nginx", "-c", conf, "-p", dir); err != nil {
		return fail(err)
	}
	e.all = append(e.all, e.origin)
	if err := waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/obj/1k.bin", originPort), 10*time.Second); err != nil {
		return fail(err)
	}

	data["Port"] = nginxPort
	if conf, err = writeTemplate(dir, "nginx.conf", nginxConf, data); err != nil {
		return fail(err)
	}
	ngx, err := start(dir, "nginx", "nginx", "-c", conf, "-p", dir)
	if err != nil {
		return fail(err)
	}
	e.all = append(e.all, ngx)
	vcl, err := writeTemplate(dir, "default.vcl", varnishVCL, data)
	if err != nil {
		return fail(err)
	}
	vrn, err := start(dir, "varnish", "varnishd", "-F", "-j", "none", "-a", fmt.Sprintf("127.0.0.1:%d", varnishPort),
		"-f", vcl, "-s", "malloc,1g", "-n", filepath.Join(dir, "varnish"))
	if err != nil {
		return fail(err)
	}
	e.all = append(e.all, vrn)
	for _, u := range []string{fmt.Sprintf("http://127.0.0.1:%d/", nginxPort), fmt.Sprintf("http://127.0.0.1:%d/", varnishPort)} {
		if err := waitHTTP(u, 20*time.Second); err != nil {
			return fail(err)
		}
	}
	single, err := startMeshcdn(bin, dir, "single", meshcdnPort, "off", "")
	if err != nil {
		return fail(err)
	}
	e.all = append(e.all, single.proc)
	var mesh []*meshNode
	for i := range 3 {
		join := ""
		if i > 0 {
			join = fmt.Sprintf("127.0.0.1:%d", gossipBase)
		}
		n, err := startMeshcdn(bin, dir, fmt.Sprintf("m%d", i+1), meshPort+i, fmt.Sprintf("127.0.0.1:%d", gossipBase+i), join)
		if err != nil {
			return fail(err)
		}
		mesh = append(mesh, n)
		e.all = append(e.all, n.proc)
	}

	same := func(base string) func(string) (string, bool) {
		return func(p string) (string, bool) { return base + p, true }
	}
	nginxT := &target{name: "nginx", http: fmt.Sprintf("http://127.0.0.1:%d", nginxPort),
		https: fmt.Sprintf("https://127.0.0.1:%d", nginxPort+tlsOffset), procs: []*proc{ngx}, h2: true}
	nginxT.path = same(nginxT.http)
	varnishT := &target{name: "varnish", http: fmt.Sprintf("http://127.0.0.1:%d", varnishPort), procs: []*proc{vrn}}
	varnishT.path = same(varnishT.http)
	varnishT.purge = purgeMethod(varnishT.http)
	singleT := &target{name: "meshcdn", http: single.http, https: single.https, procs: []*proc{single.proc}, h2: true,
		h3: fmt.Sprintf("127.0.0.1:%d", meshcdnPort+tlsOffset)}
	singleT.path = same(single.http)
	singleT.purge = adminPurge(bin, single)
	meshT := &target{name: "mesh", procs: []*proc{mesh[0].proc, mesh[1].proc, mesh[2].proc}}
	meshT.path = nonOwner(bin, mesh)
	meshT.purge = adminPurge(bin, mesh[0])
	if err := waitRing(bin, mesh); err != nil {
		return fail(err)
	}
	e.targets = []*target{nginxT, varnishT, singleT, meshT}
	for _, r := range []struct {
		stack string
		port  int
	}{{"net/http", referencePort}, {"fasthttp", fastReferencePort}} {
		ref, err := startReference(dir, r.stack, r.port)
		if err != nil {
			return fail(err)
		}
		e.all = append(e.all, ref)
		t := &target{name: r.stack, http: fmt.Sprintf("http://127.0.0.1:%d", r.port),
			https: fmt.Sprintf("https://127.0.0.1:%d", r.port+tlsOffset), procs: []*proc{ref}, reference: true,
			h2: r.stack == "net/http"} // fasthttp speaks HTTP/1.1 only
		if r.stack == "net/http" {
			t.h3 = fmt.Sprintf("127.0.0.1:%d", r.port+tlsOffset) // quic-go's http3.Server
		}
		t.path = same(t.http)
		e.targets = append(e.targets, t)
	}
	return e, nil
}
