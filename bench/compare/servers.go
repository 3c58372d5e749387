package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/template"
	"time"
)

// Ports of the servers the comparison starts, all on 127.0.0.1.
const (
	originPort  = 18600
	nginxPort   = 18601
	varnishPort = 18602
	meshcdnPort = 18603
	meshPort    = 18604 // and the next two, the nodes of the 3-node mesh
	tlsOffset   = 10    // each HTTPS listener: its HTTP port + 10
	adminOffset = 30    // each meshcdn node's admin listener
	gossipBase  = 18660
	peerBase    = 18670
)

// proc is a process the comparison started, in a process group of its own,
// so stopping it stops every process it made.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
}

func start(dir, name string, args ...string) (*proc, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	f.Close()
	return &proc{name: name, cmd: cmd, log: logPath}, nil
}

// stop ends the process group and waits for its leader.
func (p *proc) stop() {
	if p == nil || p.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// pids lists the process group's live processes.
func (p *proc) pids() []int {
	pgid := p.cmd.Process.Pid
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if g, err := syscall.Getpgid(pid); err == nil && g == pgid {
			out = append(out, pid)
		}
	}
	return out
}

// clockTicks is the kernel's USER_HZ, the unit of /proc/PID/stat's times
// (100 on every Linux the project runs on).
const clockTicks = 100

// cpuSeconds is the user and system time of every process of ps.
func cpuSeconds(ps []*proc) float64 {
	var ticks int64
	for _, p := range ps {
		for _, pid := range p.pids() {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			if err != nil {
				continue
			}
			// The fields after the command (which may hold spaces) start
			// after the last ')'; utime and stime are fields 14 and 15.
			s := string(b)
			fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
			if len(fields) > 12 {
				u, _ := strconv.ParseInt(fields[11], 10, 64)
				st, _ := strconv.ParseInt(fields[12], 10, 64)
				ticks += u + st
			}
		}
	}
	return float64(ticks) / clockTicks
}

// peakRSS is the sum of the peak resident sizes of every process of ps.
func peakRSS(ps []*proc) int64 {
	var total int64
	for _, p := range ps {
		for _, pid := range p.pids() {
			f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
			if err != nil {
				continue
			}
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
					kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
					total += kb << 10
				}
			}
			f.Close()
		}
	}
	return total
}

// waitHTTP waits until url answers.
func waitHTTP(url string, d time.Duration) error {
	c := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(d)
	for {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer within %v: %w", url, d, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// portFree fails when a port the comparison needs is taken.
func portFree(port int) error {
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return fmt.Errorf("port %d is taken: %w", port, err)
	}
	return ln.Close()
}

const originConf = `worker_processes 2;
daemon off;
pid {{.Dir}}/origin.pid;
error_log {{.Dir}}/origin-error.log warn;
events { worker_connections 8192; }
http {
  # $msec is when a response was sent: the herd measures from the end of
  # the origin's transfer.
  log_format fetch '$request $status $body_bytes_sent $msec';
  access_log {{.Dir}}/origin-access.log fetch;
  sendfile on; keepalive_requests 100000;
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:{{.Port}} reuseport backlog=4096;
    root {{.Dir}}/www;
    location /obj/  { add_header Cache-Control "public, max-age=86400"; }
    location /pass/ { add_header Cache-Control "no-store"; }
    location /herd/ { add_header Cache-Control "public, max-age=86400"; sendfile off; limit_rate 4m; }
  }
}
`

// nginxConf is nginx proxy_cache as an operator would set it up. tcp_nopush
// (Debian's default) is left off: with it, its cache hits of 100 KiB stalled
// for 40 ms each on loopback (1,350 requests/s against 30,800 without).
const nginxConf = `worker_processes 2;
daemon off;
pid {{.Dir}}/nginx.pid;
error_log {{.Dir}}/nginx-error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  sendfile on; keepalive_requests 100000;
  proxy_cache_path {{.Dir}}/nginx-cache levels=1:2 keys_zone=c:64m max_size=2g inactive=1d use_temp_path=off;
  upstream origin { server 127.0.0.1:{{.Origin}}; keepalive 128; }
  server {
    listen 127.0.0.1:{{.Port}} reuseport backlog=4096;
    listen 127.0.0.1:{{.TLSPort}} ssl http2 reuseport backlog=4096;
    ssl_certificate {{.Dir}}/cert.pem;
    ssl_certificate_key {{.Dir}}/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    location / {
      proxy_pass http://origin;
      proxy_cache c;
      proxy_cache_lock on;
      proxy_cache_lock_timeout 30s;
      add_header X-Cache $upstream_cache_status;
    }
    location /pass/ {
      proxy_pass http://origin;
      proxy_cache c;
      add_header X-Cache $upstream_cache_status;
    }
  }
}
`

const varnishVCL = `vcl 4.1;
backend origin { .host = "127.0.0.1"; .port = "{{.Origin}}"; }
sub vcl_recv {
  if (req.method == "PURGE") { return (purge); }
}
`

// writeTemplate renders a configuration into dir/name.
func writeTemplate(dir, name, tmpl string, data any) (string, error) {
	t, err := template.New(name).Parse(tmpl)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, name)
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return path, t.Execute(f, data)
}

// meshNode is one meshcdn node of the comparison.
type meshNode struct {
	*proc
	name, http, https, admin string
}

// startMeshcdn starts a meshcdn edge: alone (join "" and gossip "off") or
// in the mesh.
func startMeshcdn(bin, dir, name string, port int, gossip, join string) (*meshNode, error) {
	admin := fmt.Sprintf("127.0.0.1:%d", port+adminOffset)
	args := []string{bin, "edge", "--name", name, "--origin", fmt.Sprintf("http://127.0.0.1:%d", originPort),
		"--http", fmt.Sprintf("127.0.0.1:%d", port), "--https", fmt.Sprintf("127.0.0.1:%d", port+tlsOffset),
		"--tls-cert", filepath.Join(dir, "cert.pem"), "--tls-key", filepath.Join(dir, "key.pem"), "--http3",
		"--metrics", "off", "--admin", admin, "--memory", "1GiB", "--max-object-size", "16MiB", "--log-level", "warn"}
	if gossip == "off" {
		args = append(args, "--gossip", "off")
	} else {
		args = append(args, "--gossip", gossip, "--peer", fmt.Sprintf("127.0.0.1:%d", peerBase+port-meshPort))
		if join != "" {
			args = append(args, "--join", join)
		}
	}
	p, err := start(dir, name, args...)
	if err != nil {
		return nil, err
	}
	n := &meshNode{proc: p, name: name, http: fmt.Sprintf("http://127.0.0.1:%d", port),
		https: fmt.Sprintf("https://127.0.0.1:%d", port+tlsOffset), admin: admin}
	if err := waitHTTP(n.http+"/", 20*time.Second); err != nil {
		p.stop()
		return nil, err
	}
	return n, nil
}

// owner asks a node's admin API which node owns url.
func owner(ctx context.Context, bin string, n *meshNode, url string) (string, error) {
	out, err := exec.CommandContext(ctx, bin, "admin", "--addr", n.admin, "locate", url).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("locate: %v: %s", err, out)
	}
	for line := range strings.Lines(string(out)) {
		if v, ok := strings.CutPrefix(line, "owner"); ok {
			return strings.TrimSpace(v), nil
		}
	}
	return "", errors.New("locate: no owner in its answer")
}
