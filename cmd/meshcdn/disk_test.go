package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// edgeProc is `meshcdn edge` running as a child process.
type edgeProc struct {
	cmd                                *exec.Cmd
	http, metric, gossip, admin, https string
	mu                                 sync.Mutex
	log                                strings.Builder
}

// startEdgeProc runs this test binary as `meshcdn edge args...` and waits for
// it to listen.
func startEdgeProc(t *testing.T, args ...string) *edgeProc {
	t.Helper()
	args = append([]string{"edge", "--http", "127.0.0.1:0", "--metrics", "127.0.0.1:0",
		"--peer", "127.0.0.1:0", "--gossip", "127.0.0.1:0", "--admin", "127.0.0.1:0"}, args...)
	p := &edgeProc{cmd: exec.Command(os.Args[0], args...)}
	p.cmd.Env = append(os.Environ(), "MESHCDN_TEST_MAIN=1", "GOMEMLIMIT=") // as in production: derived from the budget
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.kill() })
	started := make(chan [2]string, 1)
	addrs := regexp.MustCompile(`(gossip|admin|https)=(\S+)`)
	go func() {
		re := regexp.MustCompile(`edge node started.* http=(\S+) metrics=(\S+)`)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.log.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				for _, a := range addrs.FindAllStringSubmatch(sc.Text(), -1) {
					switch a[1] {
					case "gossip":
						p.gossip = a[2]
					case "admin":
						p.admin = a[2]
					default:
						p.https = a[2]
					}
				}
				started <- [2]string{m[1], m[2]}
			}
		}
	}()
	select {
	case a := <-started:
		p.http, p.metric = "http://"+a[0], "http://"+a[1]
	case <-time.After(20 * time.Second):
		t.Fatalf("edge did not start: %s", p.logs())
	}
	return p
}

func (p *edgeProc) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// kill ends the process with SIGKILL: no drain, no clean-up.
func (p *edgeProc) kill() {
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
}

// metric reads one sample from the process's /metrics.
func (p *edgeProc) metricValue(t *testing.T, series string) float64 {
	resp, err := http.Get(p.metric + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return -1
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func objectBody(path string) []byte {
	seed := sha256.Sum256([]byte(path))
	r := rand.NewChaCha8(seed)
	b := make([]byte, 1000+int(seed[0])*80)
	_, _ = r.Read(b)
	return b
}

func get(url string) (int, []byte, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// TestDiskTierSurvivesKill9 is acceptance 5: 200 objects filled, the node
// killed with SIGKILL, restarted on the same cache directory with the origin
// gone: all 200 are served intact.
func TestDiskTierSurvivesKill9(t *testing.T) {
	dir := t.TempDir()
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		_, _ = w.Write(objectBody(r.URL.Path))
	}))
	edge := startEdgeProc(t, "--origin", origin.URL, "--cache-dir", dir)
	want := map[string][32]byte{}
	for i := range 200 {
		p := fmt.Sprintf("/assets/%03d.png", i)
		code, b, err := get(edge.http + p)
		if err != nil || code != 200 {
			t.Fatalf("%s: %d %v", p, code, err)
		}
		want[p] = sha256.Sum256(b)
	}
	waitFor(t, 20*time.Second, "200 objects on disk", func() bool {
		return edge.metricValue(t, `meshcdn_store_objects{tier="disk"}`) == 200
	})
	edge.kill()
	origin.Close()

	edge = startEdgeProc(t, "--origin", "http://127.0.0.1:1", "--cache-dir", dir)
	waitFor(t, 20*time.Second, "the disk index", func() bool { return edge.metricValue(t, "meshcdn_disk_ready") == 1 })
	if got := edge.metricValue(t, `meshcdn_store_objects{tier="disk"}`); got != 200 {
		t.Fatalf("%v objects on disk after the restart", got)
	}
	for p, sum := range want {
		code, b, err := get(edge.http + p)
		if err != nil || code != 200 || sha256.Sum256(b) != sum {
			t.Fatalf("%s after kill -9: %d, %d bytes, %v", p, code, len(b), err)
		}
	}
}

// TestKilledDuringFills: the node is killed with SIGKILL while large (disk)
// and small (memory) fills are half done; after a restart nothing of them is
// served, and no temporary file is left.
func TestKilledDuringFills(t *testing.T) {
	dir := t.TempDir()
	hold := make(chan struct{})
	var started sync.WaitGroup
	started.Add(6)
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		size := 64 << 10
		if strings.HasPrefix(r.URL.Path, "/big/") {
			size = 4 << 20
		}
		w.Header().Set("Cache-Control", "public, max-age=3600")
		w.Header().Set("Content-Length", strconv.Itoa(size))
		_, _ = w.Write(make([]byte, size/2))
		w.(http.Flusher).Flush()
		started.Done()
		select {
		case <-hold:
		case <-r.Context().Done():
		}
	}))
	defer origin.Close()
	defer close(hold)
	edge := startEdgeProc(t, "--origin", origin.URL, "--cache-dir", dir, "--max-object-size", "1MiB", "--memory", "8MiB")
	paths := []string{"/big/a.mp4", "/big/b.mp4", "/big/c.mp4", "/small/a.js", "/small/b.js", "/small/c.js"}
	for _, p := range paths {
		go func() { _, _, _ = get(edge.http + p) }()
	}
	started.Wait()
	waitFor(t, 10*time.Second, "large fills writing to disk", func() bool {
		tmp, _ := filepath.Glob(filepath.Join(dir, "v1", "tmp", "*.tmp"))
		return len(tmp) == 3
	})
	edge.kill()

	edge = startEdgeProc(t, "--origin", "http://127.0.0.1:1", "--cache-dir", dir)
	waitFor(t, 10*time.Second, "the disk index", func() bool { return edge.metricValue(t, "meshcdn_disk_ready") == 1 })
	for _, p := range paths {
		code, b, _ := get(edge.http + p)
		if code != http.StatusBadGateway {
			t.Errorf("%s after a kill mid-fill: %d with %d bytes; want 502 (nothing stored)", p, code, len(b))
		}
	}
	if tmp, _ := filepath.Glob(filepath.Join(dir, "v1", "tmp", "*")); len(tmp) != 0 {
		t.Errorf("temporary files left after restart: %v", tmp)
	}
	if objs, _ := filepath.Glob(filepath.Join(dir, "v1", "*", "*.obj")); len(objs) != 0 {
		t.Errorf("half-written objects under object names: %v", objs)
	}
}

// procIO reads the I/O counters of process pid: syscr counts read system
// calls (sendfile counts one).
func procIO(t *testing.T, pid int) (syscr int64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		t.Skipf("no I/O accounting here: %v", err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "syscr:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no syscr in /proc/%d/io: %s", pid, b)
	return 0
}

// TestDiskHitSendfile: a disk object goes to a plain HTTP client with
// sendfile, not copied through a buffer: serving an 8 MiB object from the
// disk tier costs the edge process a few read system calls, where a copy
// costs one per 32 KiB (256).
func TestDiskHitSendfile(t *testing.T) {
	const size = 8 << 20
	body := make([]byte, size)
	for i := range body {
		body[i] = byte(i * 7)
	}
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		w.Header().Set("Content-Length", strconv.Itoa(size))
		_, _ = w.Write(body)
	}))
	defer origin.Close()
	edge := startEdgeProc(t, "--origin", origin.URL, "--cache-dir", t.TempDir(), "--max-object-size", "1MiB", "--memory", "8MiB", "--gossip", "off")
	fetch := func() (*http.Response, []byte) {
		t.Helper()
		resp, err := http.Get(edge.http + "/big.bin")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, b
	}
	if resp, b := fetch(); resp.StatusCode != http.StatusOK || len(b) != size {
		t.Fatalf("fill: %d, %d bytes", resp.StatusCode, len(b))
	}
	waitFor(t, 10*time.Second, "a hit from the disk tier", func() bool {
		resp, _ := fetch()
		return resp.Header.Get("Cache-Status") == "meshcdn; hit"
	})
	pid := edge.cmd.Process.Pid
	before := procIO(t, pid)
	resp, b := fetch()
	reads := procIO(t, pid) - before
	if resp.StatusCode != http.StatusOK || !bytes.Equal(b, body) || resp.Header.Get("Cache-Status") != "meshcdn; hit" {
		t.Fatalf("disk hit: %d, %d bytes (equal: %v), %q", resp.StatusCode, len(b), bytes.Equal(b, body), resp.Header.Get("Cache-Status"))
	}
	t.Logf("an 8 MiB disk hit: %d read system calls in the edge", reads)
	if reads > 64 {
		t.Errorf("an 8 MiB disk hit took %d read system calls in the edge; want a few sendfile calls, not a copy (256 reads of 32 KiB)", reads)
	}
}
