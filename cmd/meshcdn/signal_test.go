package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets a test run this binary's main in a child process.
func TestMain(m *testing.M) {
	if os.Getenv("MESHCDN_TEST_MAIN") == "1" {
		main()
		return
	}
	// Edges run in this process set the runtime's memory limit from their
	// budget; a test process (race detector and all) must not live under it.
	// Child processes get it cleared again (startEdgeProc).
	os.Setenv("GOMEMLIMIT", "off")
	os.Exit(m.Run())
}

// TestSIGTERMDrains runs `meshcdn edge` as a real process, sends SIGTERM while
// a request is in flight, and expects the request to complete and exit code 0.
func TestSIGTERMDrains(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 1)
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "4")
		_, _ = w.Write([]byte("ab"))
		w.(http.Flusher).Flush()
		arrived <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
		_, _ = w.Write([]byte("cd"))
	}))
	defer origin.Close()

	cmd := exec.Command(os.Args[0], "edge", "--origin", origin.URL, "--http", "127.0.0.1:0", "--metrics", "off",
		"--peer", "127.0.0.1:0", "--gossip", "127.0.0.1:0", "--admin", "off")
	cmd.Env = append(os.Environ(), "MESHCDN_TEST_MAIN=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill() }()
	addr := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`edge node started.*http=(\S+)`)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
		}
	}()
	var base string
	select {
	case a := <-addr:
		base = "http://" + a
	case <-time.After(20 * time.Second):
		t.Fatal("edge did not start")
	}

	type result struct {
		body string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		resp, err := http.Get(base + "/api/slow")
		if err != nil {
			got <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		got <- result{string(b), err}
	}()
	select {
	case <-arrived: // the request is in flight
	case <-time.After(10 * time.Second):
		t.Fatal("request did not reach the origin")
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Release the origin only once the edge has stopped accepting connections.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("edge kept accepting after SIGTERM")
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(release)
	r := <-got
	if r.err != nil || r.body != "abcd" {
		t.Errorf("in-flight request: %q %v", r.body, r.err)
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	select {
	case err := <-waitErr:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("edge did not exit after SIGTERM")
	}
}
