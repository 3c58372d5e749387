package origin

import (
	"context"
	"net"
	"net/http"
	"time"
)

// HealthCheck probes targets actively.
type HealthCheck struct {
	// Path is requested with GET; a status below 500 counts as up. Empty: a TCP
	// connect is the probe.
	Path     string
	Interval time.Duration
	Timeout  time.Duration
	// Fails failed probes in a row mark a target down; Passes good ones mark it
	// up again.
	Fails  int
	Passes int
}

// RunHealth probes every target each Interval until ctx ends. It does nothing
// without a HealthCheck. The caller owns the goroutine that runs it.
func (p *Pool) RunHealth(ctx context.Context) {
	hc := p.cfg.Health
	if hc == nil {
		return
	}
	type state struct {
		fails, passes int
		ejection      int64 // the passive ejection the passes count from
	}
	states := make([]state, len(p.cfg.Targets))
	tick := time.NewTicker(hc.Interval)
	defer tick.Stop()
	for {
		for i, t := range p.cfg.Targets {
			ok := p.probe(ctx, t)
			if ctx.Err() != nil {
				return
			}
			st := &states[i]
			if ok {
				if e := t.downUntil.Load(); e != st.ejection {
					st.ejection, st.passes = e, 0 // real traffic ejected it since: count anew
				}
				st.fails, st.passes = 0, st.passes+1
				// Back from the dead, by the probe's account or after an
				// ejection by real traffic (Passes passes since it): forget
				// the failures real traffic met while it was down, too.
				if st.passes >= hc.Passes && (t.probeDown.Swap(false) || time.Now().UnixNano() < st.ejection) {
					t.fails.Store(0)
					t.downUntil.Store(0)
					p.log.Info("origin healthy again", "origin", t.Name())
				}
			} else {
				st.passes, st.fails = 0, st.fails+1
				if st.fails >= hc.Fails && !t.probeDown.Swap(true) {
					p.log.Warn("origin failed its health check", "origin", t.Name(), "failures", st.fails)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (p *Pool) probe(ctx context.Context, t *Target) bool {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Health.Timeout)
	defer cancel()
	if p.cfg.Health.Path == "" {
		addr := t.URL.Host
		if t.URL.Port() == "" {
			port := "80"
			if t.URL.Scheme == "https" {
				port = "443"
			}
			addr = net.JoinHostPort(t.URL.Hostname(), port)
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return false
		}
		_ = c.Close()
		return true
	}
	u := *t.URL
	u.Path += p.cfg.Health.Path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return false
	}
	req.Header.Set("User-Agent", "meshcdn-health-check")
	if p.cfg.Host != "" && p.cfg.Host != "client" && p.cfg.Host != "origin" {
		req.Host = p.cfg.Host
	}
	resp, err := p.rt.RoundTrip(req)
	if err != nil {
		return false
	}
	DrainClose(resp.Body)
	return resp.StatusCode < 500
}
