package main

import (
	"strings"
	"testing"
)

const wrkOutput = `Running 5s test @ http://127.0.0.1:18601/obj/1k.bin
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.10ms    1.02ms  21.33ms   91.17%
    Req/Sec    24.10k     1.23k   26.40k    70.00%
  Latency Distribution
     50%    1.90ms
     75%    2.30ms
     90%    2.90ms
     99%    650.00us
  120000 requests in 5.00s, 140.00MB read
Requests/sec:  23999.50
Transfer/sec:     28.00MB
`

func TestParseWrk(t *testing.T) {
	s, n, err := parseWrk(wrkOutput)
	if err != nil || s.rps != 23999.50 || s.p99ms != 0.65 || n != 120000 {
		t.Errorf("%+v %d %v", s, n, err)
	}
	if _, _, err := parseWrk(strings.Replace(wrkOutput, "Requests/sec", "  Non-2xx or 3xx responses: 12\nRequests/sec", 1)); err == nil {
		t.Error("a run with error responses was accepted")
	}
	if _, _, err := parseWrk("unable to connect"); err == nil {
		t.Error("no report was accepted")
	}
}

func TestMedian(t *testing.T) {
	if median([]float64{3, 1, 2}) != 2 || median([]float64{4, 1, 3, 2}) != 2.5 || median(nil) != 0 {
		t.Error("median")
	}
}
