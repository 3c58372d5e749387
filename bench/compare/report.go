package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func field(ss []sample, f func(sample) float64) []float64 {
	out := make([]float64, len(ss))
	for i, s := range ss {
		out[i] = f(s)
	}
	return out
}

// report writes the table (printed too), the raw samples and the plots.
func report(res *results, out string, dur time.Duration, reps, conns int) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Medians of %d interleaved runs of `wrk -t1 -c%d -d%v` per cell on %d cores shared by wrk and the servers; ratios are to nginx "+
		"(requests per second; CPU time of the server's processes per request). meshcdn is one node; mesh is a "+
		"3-node mesh whose requests land on a node that does not own the object; net/http is Go's own HTTP stack with no cache "+
		"(hits from memory, httputil.ReverseProxy for the pass-through): what any server built on it reaches here; fasthttp is "+
		"the same on github.com/valyala/fasthttp (a HostClient for the pass-through). HTTP/2 hits are measured with `h2load` "+
		"instead of wrk, with as many connections of one stream each. HTTP/3 hits are measured with a load generator on "+
		"quic-go's client in the comparison's own process (no packaged one speaks HTTP/3 here), as many QUIC connections of "+
		"one request at a time; Debian's nginx has no HTTP/3, so that row's ratios are to nginx's HTTPS hit, and net/http "+
		"there is quic-go's http3.Server.\n\n", reps, conns, dur, runtime.NumCPU())
	b.WriteString("| work | server | requests/s | × nginx | spread (min–max) | p99 | CPU per request | × nginx |\n|---|---|---|---|---|---|---|---|\n")
	for _, w := range works {
		byServer := res.samples[w.name]
		nginx := res.samples[w.baseOf()]["nginx"]
		base := median(field(nginx, func(s sample) float64 { return s.rps }))
		baseCPU := median(field(nginx, func(s sample) float64 { return s.cpuPerReqUS }))
		for _, srv := range res.servers {
			ss := byServer[srv]
			if len(ss) == 0 {
				fmt.Fprintf(&b, "| %s | %s | n/a | | | | | |\n", w.name, srv)
				continue
			}
			rps := field(ss, func(s sample) float64 { return s.rps })
			cpu := median(field(ss, func(s sample) float64 { return s.cpuPerReqUS }))
			p99 := "n/a" // h2load reports no percentiles
			if m := median(field(ss, func(s sample) float64 { return s.p99ms })); m >= 0 {
				p99 = fmt.Sprintf("%.2f ms", m)
			}
			fmt.Fprintf(&b, "| %s | %s | %.0f | %.2f | %.0f–%.0f | %s | %.1f µs | %.2f |\n", w.name, srv, median(rps),
				median(rps)/base, slices.Min(rps), slices.Max(rps), p99, cpu, cpu/baseCPU)
		}
	}
	fmt.Fprintf(&b, "\nThundering herd: 200 clients at once on a cold 1 MiB object the origin sends at 4 MB/s (its own transfer: %v).\n\n", res.origin.Round(time.Millisecond))
	b.WriteString("| server | origin fetches | last client done after the origin's transfer ended | purge (answered) | peak RSS |\n|---|---|---|---|---|\n")
	for _, srv := range res.servers {
		h, ok := res.herd[srv]
		if !ok {
			continue // the reference caches nothing
		}
		purge := "n/a"
		if d, ok := res.purge[srv]; ok {
			purge = d.Round(100 * time.Microsecond).String()
		}
		fmt.Fprintf(&b, "| %s | %d | %+.3f s | %s | %.0f MiB |\n", srv, h.fetches, h.over.Seconds(), purge, float64(res.rss[srv])/(1<<20))
	}
	b.WriteString("\nResident memory per cached byte: the growth of the server's resident set and memory files while 32 MiB of distinct objects of one size are cached (nginx caches on disk: not comparable).\n\n| server |")
	for _, m := range memSizes {
		b.WriteString(" " + m.name + " |")
	}
	b.WriteString("\n|---|---|---|---|\n")
	for _, srv := range res.servers {
		per, ok := res.perByte[srv]
		if !ok {
			continue
		}
		b.WriteString("| " + srv + " |")
		for _, m := range memSizes {
			fmt.Fprintf(&b, " %.2f |", per[m.name])
		}
		b.WriteString("\n")
	}
	table := b.String()
	fmt.Print("\n" + table)
	if err := os.WriteFile(filepath.Join(out, "compare.md"), []byte(table), 0o644); err != nil {
		return err
	}
	raw, _ := json.MarshalIndent(struct {
		Samples map[string]map[string][]sampleJSON `json:"samples"`
	}{toJSON(res.samples)}, "", "  ")
	if err := os.WriteFile(filepath.Join(out, "samples.json"), raw, 0o644); err != nil {
		return err
	}
	return plotRatios(res, filepath.Join(out, "ratios.png"))
}

type sampleJSON struct {
	RPS       float64 `json:"rps"`
	P99ms     float64 `json:"p99_ms"`
	CPUPerReq float64 `json:"cpu_per_request_us"`
}

func toJSON(m map[string]map[string][]sample) map[string]map[string][]sampleJSON {
	out := map[string]map[string][]sampleJSON{}
	for w, bys := range m {
		out[w] = map[string][]sampleJSON{}
		for s, ss := range bys {
			for _, x := range ss {
				out[w][s] = append(out[w][s], sampleJSON{x.rps, x.p99ms, x.cpuPerReqUS})
			}
		}
	}
	return out
}

// plotRatios draws requests per second as a ratio to nginx, a group of bars
// per work.
func plotRatios(res *results, path string) error {
	p := plot.New()
	p.Title.Text = "Requests per second, ratio to nginx proxy_cache (medians)"
	p.Y.Label.Text = "× nginx"
	var names []string
	for _, w := range works {
		names = append(names, w.name)
	}
	width := vg.Points(14)
	top := 1.0
	for i, srv := range res.servers {
		vals := make(plotter.Values, len(works))
		for j, w := range works {
			base := median(field(res.samples[w.baseOf()]["nginx"], func(s sample) float64 { return s.rps }))
			if ss := res.samples[w.name][srv]; len(ss) > 0 && base > 0 {
				vals[j] = median(field(ss, func(s sample) float64 { return s.rps })) / base
				top = max(top, vals[j])
			}
		}
		bars, err := plotter.NewBarChart(vals, width)
		if err != nil {
			return err
		}
		bars.LineStyle.Width = 0
		bars.Color = palette[i%len(palette)]
		bars.Offset = width * vg.Length(float64(i)-float64(len(res.servers)-1)/2)
		p.Add(bars)
		p.Legend.Add(srv, bars)
	}
	p.Legend.Top = true
	p.NominalX(names...)
	// Room for the outer bars of the first and last groups, and for the
	// legend above the tallest bar.
	p.X.Min, p.X.Max = -0.6, float64(len(works))-0.4
	p.Y.Min, p.Y.Max = 0, top*1.35
	return p.Save(9*vg.Inch, 4.5*vg.Inch, path)
}
