package testutil

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// RawHTTP writes raw bytes to addr on one connection and returns the
// status lines of the responses that come back, up to count, until the
// server closes the connection. Every step is bounded by 10 s.
func RawHTTP(t testing.TB, addr, raw string, count int) []string {
	t.Helper()
	c, br := send(t, addr, raw)
	defer c.Close()
	var got []string
	for range count {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			break
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		got = append(got, resp.Status)
	}
	return got
}

// RawResponse writes raw bytes, one request of method, to addr on a
// connection of their own and returns the response with its body read
// whole. Every step is bounded by 10 s.
func RawResponse(t testing.TB, addr, raw, method string) (*http.Response, []byte) {
	t.Helper()
	c, br := send(t, addr, raw)
	defer c.Close()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("body: %v", err)
	}
	return resp, b
}

// send dials addr and writes raw on the connection, bounded by 10 s.
func send(t testing.TB, addr, raw string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		_ = c.Close()
		t.Fatal(err)
	}
	return c, bufio.NewReader(c)
}
