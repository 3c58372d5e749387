package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// runH3 loads u over HTTP/3 for dur: conns QUIC connections to the UDP
// address addr, each with one request at a time, as wrk's and h2load's
// connections. No packaged load generator speaks HTTP/3 here (Debian's
// h2load is built without it), so this one runs on quic-go's client in
// this process; its CPU is not the server's, which is what is counted.
func runH3(ctx context.Context, u, addr string, dur time.Duration, conns int) (sample, int64, error) {
	ctx, cancel := context.WithTimeout(ctx, dur+time.Minute)
	defer cancel()
	clients := make([]*http.Client, conns)
	for i := range clients {
		tr := &http3.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableCompression: true,
			Dial: func(ctx context.Context, _ string, tc *tls.Config, qc *quic.Config) (*quic.Conn, error) {
				return quic.DialAddr(ctx, addr, tc, qc)
			}}
		defer tr.Close()
		clients[i] = &http.Client{Transport: tr}
		// Connected before the clock starts, as wrk's connections are
		// within its first milliseconds.
		if _, err := getH3(ctx, clients[i], u); err != nil {
			return sample{}, 0, fmt.Errorf("HTTP/3 to %s: %w", addr, err)
		}
	}
	lat := make([][]time.Duration, conns)
	errs := make([]error, conns)
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(dur)
	for i, c := range clients {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				d, err := getH3(ctx, c, u)
				if err != nil {
					errs[i] = err
					return
				}
				lat[i] = append(lat[i], d)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return sample{}, 0, fmt.Errorf("HTTP/3 load saw errors: %w", err)
	}
	all := slices.Concat(lat...)
	if len(all) == 0 {
		return sample{}, 0, errors.New("HTTP/3 load: no request completed")
	}
	slices.Sort(all)
	p99 := all[min(len(all)-1, len(all)*99/100)]
	return sample{rps: float64(len(all)) / elapsed.Seconds(), p99ms: float64(p99) / float64(time.Millisecond)}, int64(len(all)), nil
}

// getH3 fetches u whole and returns how long it took; anything but a 200
// is an error.
func getH3(ctx context.Context, c *http.Client, u string) (time.Duration, error) {
	t0 := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %d", resp.StatusCode)
	}
	return time.Since(t0), err
}
