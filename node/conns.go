package node

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/meshcdn/meshcdn/node/connlimit"
)

// connsWarnEvery spaces the log lines that say connections were refused.
const connsWarnEvery = 10 * time.Second

// newConnLimiter is the limit on client connections (max_connections,
// max_connections_per_ip), with its metrics and a log line at most every
// connsWarnEvery while connections are refused.
func (n *Node) newConnLimiter() *connlimit.Limiter {
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshcdn_connections_refused_total",
		Help: "Client connections closed at once by a connection limit, by reason: max_connections or max_connections_per_ip.",
	}, []string{"reason"})
	idleClosed := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshcdn_connections_idle_closed_total",
		Help: "Idle client connections closed to make room for a new one under a connection limit, by reason.",
	}, []string{"reason"})
	for _, r := range []string{connlimit.ReasonTotal, connlimit.ReasonPerIP} {
		refused.WithLabelValues(r)
		idleClosed.WithLabelValues(r)
	}
	warn := &rate.Sometimes{Interval: connsWarnEvery}
	var count atomic.Int64
	l := connlimit.New(connlimit.Config{
		Max:   n.cfg.MaxConnections,
		PerIP: n.cfg.MaxConnectionsPerIP,
		Refused: func(reason string) {
			refused.WithLabelValues(reason).Inc()
			count.Add(1)
			warn.Do(func() {
				n.log.Warn("connection limit reached: new client connections closed at once", "reason", reason,
					"max_connections", n.cfg.MaxConnections, "max_connections_per_ip", n.cfg.MaxConnectionsPerIP,
					"refused_since_last_line", count.Swap(0))
			})
		},
		IdleClosed: func(reason string) { idleClosed.WithLabelValues(reason).Inc() },
	})
	n.metrics.reg.MustRegister(refused, idleClosed,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshcdn_connections_open", Help: "Client connections open (HTTP and HTTPS)."},
			func() float64 { return float64(l.Open()) }))
	return l
}
