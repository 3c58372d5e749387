package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// work is one load the comparison puts on every server: over HTTPS with
// https, over HTTP/2 (h2load instead of wrk) with h2 as well, over HTTP/3
// (runH3) with h3. Its ratios are to nginx's figures for base, its own
// name when empty.
type work struct {
	name, path    string
	https, h2, h3 bool
	base          string
}

var works = []work{
	{name: "hit 1 KiB", path: "/obj/1k.bin"},
	{name: "hit 100 KiB", path: "/obj/100k.bin"},
	{name: "hit 1 MiB", path: "/obj/1m.bin"},
	{name: "pass-through 1 KiB", path: "/pass/1k.bin"},
	{name: "HTTPS hit 1 KiB", path: "/obj/1k.bin", https: true},
	{name: "HTTP/2 hit 1 KiB", path: "/obj/1k.bin", https: true, h2: true},
	// Debian's nginx (1.22) has no HTTP/3: its HTTPS figures are the base.
	{name: "HTTP/3 hit 1 KiB", path: "/obj/1k.bin", https: true, h3: true, base: "HTTPS hit 1 KiB"},
}

// baseOf is the work whose nginx figures w's ratios are to.
func (w work) baseOf() string {
	if w.base != "" {
		return w.base
	}
	return w.name
}

// sample is one wrk run.
type sample struct {
	rps, p99ms, cpuPerReqUS float64
}

// results is everything measured, by work and server.
type results struct {
	servers []string
	samples map[string]map[string][]sample // work → server → samples
	herd    map[string]herdResult
	purge   map[string]time.Duration
	rss     map[string]int64
	perByte map[string]map[string]float64 // server → object size → resident bytes per cached byte
	origin  time.Duration                 // the origin's own transfer time of a herd object
}

type herdResult struct {
	fetches int
	over    time.Duration // the last client's completion after the origin's transfer ended
}

func measure(ctx context.Context, e *env, dur time.Duration, reps, conns int) (*results, error) {
	res := &results{samples: map[string]map[string][]sample{}, herd: map[string]herdResult{},
		purge: map[string]time.Duration{}, rss: map[string]int64{}, perByte: map[string]map[string]float64{}}
	for _, t := range e.targets {
		res.servers = append(res.servers, t.name)
	}
	// Warm every server: each object fetched twice, so the next is a hit.
	for _, t := range e.targets {
		for _, w := range works {
			u, _ := t.path(w.path)
			for range 2 {
				if err := fetch(u); err != nil {
					return nil, fmt.Errorf("warming %s: %w", t.name, err)
				}
			}
		}
	}
	for rep := range reps {
		for _, w := range works {
			for i := range e.targets {
				t := e.targets[(i+rep)%len(e.targets)] // a different server goes first in each repetition
				if w.https && t.https == "" || w.h2 && !t.h2 || w.h3 && t.h3 == "" {
					continue // no HTTPS listener, or no HTTP/2 or HTTP/3 on it
				}
				u, _ := t.path(w.path)
				if w.https {
					u = t.https + w.path
				}
				if err := ctx.Err(); err != nil {
					return nil, err
				}
				before := cpuSeconds(t.procs)
				run := runWrk
				switch {
				case w.h2:
					run = runH2load
				case w.h3:
					run = func(ctx context.Context, u string, dur time.Duration, conns int) (sample, int64, error) {
						return runH3(ctx, u, t.h3, dur, conns)
					}
				}
				s, reqs, err := run(ctx, u, dur, conns)
				if err != nil {
					return nil, fmt.Errorf("%s, %s: %w", w.name, t.name, err)
				}
				s.cpuPerReqUS = (cpuSeconds(t.procs) - before) / float64(max(reqs, 1)) * 1e6
				if res.samples[w.name] == nil {
					res.samples[w.name] = map[string][]sample{}
				}
				res.samples[w.name][t.name] = append(res.samples[w.name][t.name], s)
				log.Printf("rep %d/%d  %-20s %-8s %10.0f req/s  p99 %6.2f ms  %6.1f µs CPU/req", rep+1, reps, w.name, t.name, s.rps, s.p99ms, s.cpuPerReqUS)
			}
		}
	}
	if quick {
		return res, nil
	}
	var err error
	if res.origin, err = timeFetch(fmt.Sprintf("http://127.0.0.1:%d/herd/reference.bin", originPort)); err != nil {
		return nil, err
	}
	for i, t := range e.targets {
		if t.reference {
			continue
		}
		h, err := herd(e, t, herdTargets[i])
		if err != nil {
			return nil, err
		}
		res.herd[t.name] = h
		log.Printf("herd %-8s %d origin fetch(es), last client %v after the origin's transfer ended", t.name, h.fetches, h.over)
	}
	for _, t := range e.targets {
		if t.purge == nil {
			continue
		}
		d, err := t.purge(ctx, "/obj/1m.bin")
		if err != nil {
			return nil, fmt.Errorf("purge at %s: %w", t.name, err)
		}
		res.purge[t.name] = d
	}
	for _, t := range e.targets {
		if !t.reference {
			res.rss[t.name] = peakRSS(t.procs)
		}
	}
	for _, t := range e.targets {
		if t.name != "meshcdn" && t.name != "varnish" {
			continue // nginx caches on disk; the mesh is three nodes
		}
		m, err := memoryPerByte(t)
		if err != nil {
			return nil, err
		}
		res.perByte[t.name] = m
		log.Printf("memory %-8s %v resident bytes per cached byte", t.name, m)
	}
	return res, nil
}

var insecure = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
	TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableCompression: true}}

func fetch(u string) error {
	resp, err := insecure.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s: status %d", u, resp.StatusCode)
	}
	return nil
}

func timeFetch(u string) (time.Duration, error) {
	start := time.Now()
	err := fetch(u)
	return time.Since(start), err
}

var (
	wrkRPS  = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkReqs = regexp.MustCompile(`(\d+) requests in`)
	wrkP99  = regexp.MustCompile(`(?m)^\s+99%\s+([0-9.]+)(us|ms|s)`)
	wrkErrs = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)|Socket errors: .*`)
)

// runWrk runs wrk with one thread against u.
func runWrk(ctx context.Context, u string, dur time.Duration, conns int) (sample, int64, error) {
	out, err := exec.CommandContext(ctx, "wrk", "-t1", fmt.Sprintf("-c%d", conns), fmt.Sprintf("-d%ds", int(dur.Seconds())),
		"--latency", u).CombinedOutput()
	if err != nil {
		return sample{}, 0, fmt.Errorf("wrk: %v: %s", err, out)
	}
	return parseWrk(string(out))
}

// parseWrk reads wrk's report (run with --latency): requests per second,
// the 99th percentile latency and the requests made. Errors of any kind
// fail the run: a server that answers errors fast is not fast.
func parseWrk(s string) (sample, int64, error) {
	if m := wrkErrs.FindString(s); m != "" {
		return sample{}, 0, fmt.Errorf("wrk saw errors: %s", m)
	}
	rps, p99, reqs := wrkRPS.FindStringSubmatch(s), wrkP99.FindStringSubmatch(s), wrkReqs.FindStringSubmatch(s)
	if rps == nil || p99 == nil || reqs == nil {
		return sample{}, 0, fmt.Errorf("wrk's output: %s", s)
	}
	var smp sample
	smp.rps, _ = strconv.ParseFloat(rps[1], 64)
	smp.p99ms, _ = strconv.ParseFloat(p99[1], 64)
	switch p99[2] {
	case "us":
		smp.p99ms /= 1000
	case "s":
		smp.p99ms *= 1000
	}
	n, _ := strconv.ParseInt(reqs[1], 10, 64)
	return smp, n, nil
}

// runH2load loads u over HTTP/2 with h2load for dur: conns connections of
// one stream each, as wrk's.
func runH2load(ctx context.Context, u string, dur time.Duration, conns int) (sample, int64, error) {
	out, err := exec.CommandContext(ctx, "h2load", "-t1", fmt.Sprintf("-c%d", conns), "-m1",
		fmt.Sprintf("-D%d", int(dur.Seconds())), u).CombinedOutput()
	if err != nil {
		return sample{}, 0, fmt.Errorf("h2load: %v: %s", err, out)
	}
	return parseH2load(string(out))
}

var (
	h2RPS      = regexp.MustCompile(`finished in [0-9.]+m?s, ([0-9.]+) req/s`)
	h2Requests = regexp.MustCompile(`requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout`)
	h2Statuses = regexp.MustCompile(`status codes: \d+ 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx`)
)

// parseH2load reads h2load's report: requests per second and the requests
// that succeeded. It gives no percentiles (p99 is -1: not measured). A run
// with failed, errored or timed-out requests, or answers other than 2xx,
// fails.
func parseH2load(s string) (sample, int64, error) {
	rps, reqs, st := h2RPS.FindStringSubmatch(s), h2Requests.FindStringSubmatch(s), h2Statuses.FindStringSubmatch(s)
	if rps == nil || reqs == nil || st == nil {
		return sample{}, 0, fmt.Errorf("h2load's output: %s", s)
	}
	if reqs[2] != "0" || reqs[3] != "0" || reqs[4] != "0" || st[1] != "0" || st[2] != "0" || st[3] != "0" {
		return sample{}, 0, fmt.Errorf("h2load saw errors: %s; %s", reqs[0], st[0])
	}
	smp := sample{p99ms: -1}
	smp.rps, _ = strconv.ParseFloat(rps[1], 64)
	n, _ := strconv.ParseInt(reqs[1], 10, 64)
	return smp, n, nil
}

// herd sends 200 clients at once at a cold 1 MiB object the origin sends
// at 4 MB/s, and counts the origin's fetches of it. The tail is measured
// from the end of the origin's transfer (its access log's $msec) to the
// last client's last byte: what the server adds, without the time the
// clients themselves take to connect (200 dials at once on these cores
// delayed the first request by 5 to 30 ms).
func herd(e *env, t *target, name string) (herdResult, error) {
	path := "/herd/" + name + ".bin"
	u, _ := t.path(path)
	const clients = 200
	tr := &http.Transport{MaxConnsPerHost: clients, MaxIdleConnsPerHost: clients, DisableCompression: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: time.Minute}
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	var mu sync.Mutex
	var last time.Time
	go0 := make(chan struct{})
	for range clients {
		wg.Go(func() {
			<-go0
			resp, err := c.Get(u)
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err == nil && resp.StatusCode != 200 {
					err = fmt.Errorf("status %d", resp.StatusCode)
				}
			}
			if err != nil {
				errs <- err
				return
			}
			done := time.Now()
			mu.Lock()
			if done.After(last) {
				last = done
			}
			mu.Unlock()
		})
	}
	time.Sleep(100 * time.Millisecond) // the goroutines are parked on go0
	close(go0)
	wg.Wait()
	close(errs)
	for err := range errs {
		return herdResult{}, fmt.Errorf("herd at %s: %w", t.name, err)
	}
	fetches, err := originFetches(e, path)
	if err != nil {
		return herdResult{}, err
	}
	// The first complete transfer to end is when every client could have
	// had the object.
	var end time.Time
	for _, f := range fetches {
		if f.bytes == 1<<20 && (end.IsZero() || f.end.Before(end)) {
			end = f.end
		}
	}
	if end.IsZero() {
		return herdResult{}, fmt.Errorf("herd at %s: the origin logged no complete transfer of %s", t.name, path)
	}
	return herdResult{fetches: len(fetches), over: last.Sub(end)}, nil
}

// originFetch is one of the origin's responses, from its access log.
type originFetch struct {
	end   time.Time // when its last byte was sent
	bytes int64     // of the body
}

// originFetches returns the origin's responses for path.
func originFetches(e *env, path string) ([]originFetch, error) {
	f, err := os.Open(filepath.Join(filepath.Dir(e.origin.log), "origin-access.log"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseFetches(f, path)
}

// parseFetches reads the responses for path from an origin access log in
// the fetch format (servers.go).
func parseFetches(r io.Reader, path string) ([]originFetch, error) {
	var fetches []originFetch
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		// GET /herd/x.bin HTTP/1.1 200 1048576 1796652753.224
		fields := strings.Fields(sc.Text())
		if len(fields) != 6 || fields[1] != path {
			continue
		}
		n, err1 := strconv.ParseInt(fields[4], 10, 64)
		msec, err2 := strconv.ParseFloat(fields[5], 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("origin log: unexpected line %q", sc.Text())
		}
		fetches = append(fetches, originFetch{end: time.UnixMilli(int64(math.Round(msec * 1000))), bytes: n})
	}
	return fetches, sc.Err()
}

// purgeMethod purges with the HTTP PURGE method (Varnish's VCL above).
func purgeMethod(base string) func(context.Context, string) (time.Duration, error) {
	return func(ctx context.Context, path string) (time.Duration, error) {
		req, _ := http.NewRequestWithContext(ctx, "PURGE", base+path, nil)
		start := time.Now()
		resp, err := insecure.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return 0, fmt.Errorf("PURGE: %d", resp.StatusCode)
		}
		return time.Since(start), nil
	}
}

// adminPurge purges through a node's admin API, which answers once every
// member applied it (or its lease ran out).
func adminPurge(bin string, n *meshNode) func(context.Context, string) (time.Duration, error) {
	return func(ctx context.Context, path string) (time.Duration, error) {
		start := time.Now()
		out, err := exec.CommandContext(ctx, bin, "admin", "--addr", n.admin, "purge", "http://127.0.0.1"+path).CombinedOutput()
		if err != nil {
			return 0, fmt.Errorf("%v: %s", err, out)
		}
		return time.Since(start), nil
	}
}

// nonOwner sends each path to a node of the mesh that does not own it.
func nonOwner(bin string, mesh []*meshNode) func(string) (string, bool) {
	var mu sync.Mutex
	chosen := map[string]string{}
	return func(p string) (string, bool) {
		mu.Lock()
		defer mu.Unlock()
		if u, ok := chosen[p]; ok {
			return u, true
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		o, err := owner(ctx, bin, mesh[0], "http://127.0.0.1"+p)
		if err != nil {
			log.Printf("mesh: %v; asking m1", err)
			return mesh[0].http + p, false
		}
		for _, n := range mesh {
			if n.name != o {
				chosen[p] = n.http + p
				return chosen[p], true
			}
		}
		return mesh[0].http + p, false
	}
}

// waitRing waits until every node of the mesh lists the three.
func waitRing(bin string, mesh []*meshNode) error {
	deadline := time.Now().Add(30 * time.Second)
	for _, n := range mesh {
		for {
			out, _ := exec.Command(bin, "admin", "--addr", n.admin, "members").CombinedOutput()
			if strings.Count(string(out), " alive ") >= 3 {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("the mesh did not form: %s", out)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return nil
}

// rss is the sum of the resident sizes of every process of ps, with the
// memory files they hold open (a memfd's pages are not in the resident set
// of a process that does not map it: meshcdn keeps long bodies so).
func rss(ps []*proc) int64 {
	var total int64
	for _, p := range ps {
		for _, pid := range p.pids() {
			total += memFiles(pid)
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
			if err != nil {
				continue
			}
			for line := range strings.Lines(string(b)) {
				if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
					kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
					total += kb << 10
				}
			}
		}
	}
	return total
}

// memFiles is the memory the memory files open in process pid take,
// each file counted once.
func memFiles(pid int) int64 {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, _ := os.ReadDir(dir)
	seen := map[uint64]bool{}
	var total int64
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil || !strings.HasPrefix(target, "/memfd:") {
			continue
		}
		fi, err := os.Stat(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok || seen[st.Ino] {
			continue
		}
		seen[st.Ino] = true
		total += st.Blocks * 512
	}
	return total
}

// memSizes are the object sizes of the memory measurement, with how many
// distinct objects (32 MiB of each) are cached.
var memSizes = []struct {
	name, path string
	size, n    int
}{{"1 KiB", "/obj/1k.bin", 1 << 10, 32 << 10}, {"100 KiB", "/obj/100k.bin", 100 << 10, 328}, {"1 MiB", "/obj/1m.bin", 1 << 20, 32}}

// memoryPerByte caches 32 MiB of distinct objects of each size (the query
// string makes them distinct) and returns the growth of the server's
// resident memory per cached byte.
func memoryPerByte(t *target) (map[string]float64, error) {
	out := map[string]float64{}
	for _, m := range memSizes {
		before := rss(t.procs)
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for w := range 8 {
			wg.Go(func() {
				for i := w; i < m.n; i += 8 {
					u, _ := t.path(fmt.Sprintf("%s?mem=%d", m.path, i))
					if err := fetch(u); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			return nil, fmt.Errorf("memory fill at %s: %w", t.name, err)
		}
		out[m.name] = float64(rss(t.procs)-before) / float64(m.size*m.n)
	}
	return out, nil
}
