package node

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/internal/testutil"
	"github.com/meshcdn/meshcdn/node/site"
)

// TestACMEMesh: three members on their own loopback addresses obtain one
// certificate for an ACME site from Pebble: one order for the cluster (by
// the ring owner of the site), the CA's HTTP-01 validation answered by a
// member that does not run the order (it asks the owner), every member
// serving the one certificate and keeping a copy on disk; and the renewal
// replaces it on every member, again with one order. HTTP/3 serves the
// certificate HTTPS serves.
func TestACMEMesh(t *testing.T) {
	if _, err := os.Stat("../bin/pebble"); err != nil {
		t.Skip("bin/pebble is missing: `make tools` installs it (`make test` does)")
	}
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		_, _ = io.WriteString(w, "shop")
	})
	port := commonPort(t, "127.0.0.2", "127.0.0.3", "127.0.0.4")
	listen, pebbleCert := testutil.PebbleAddress(t)
	var nodes []*Node
	for i := range 3 {
		ip := fmt.Sprintf("127.0.0.%d", i+2)
		cfg := Config{Name: fmt.Sprintf("n%d", i+1), HTTPAddr: net.JoinHostPort(ip, strconv.Itoa(port)),
			HTTPSAddr: ip + ":0", HTTP3: true, MetricsAddr: "off", CacheDir: t.TempDir(),
			ACME:  &ACMEConfig{Directory: "https://" + listen + "/dir", Roots: pebbleCert.Pool, Email: "ops@shop.test"},
			Sites: []site.Config{{Hosts: []string{"shop.test", "www.shop.test"}, Origins: []site.OriginConfig{{URL: o.URL}}, ACME: true}},
			Mesh:  &MeshConfig{PeerAddr: ip + ":0", GossipAddr: ip + ":0", Fast: true}}
		if i > 0 {
			cfg.Mesh.Join = []string{nodes[0].GossipAddr()}
		}
		n := startNode(t, nil, cfg)
		nodes = append(nodes, n)
	}
	waitRings(t, nodes, 3)
	owner, _ := nodes[0].mesh.Ring().Owner(acmeKey("shop.test"))
	var other *Node
	for _, n := range nodes {
		if n.Name() != owner {
			other = n
		}
	}
	// The CA reaches a member that does not run the order.
	host, _, _ := net.SplitHostPort(other.HTTPAddr())
	p := testutil.StartPebble(t, "../bin", testutil.PebbleOptions{HTTPPort: port, Validity: 20 * time.Second, Listen: listen, Cert: &pebbleCert})
	p.AddA(t, "shop.test", host)
	p.AddA(t, "www.shop.test", host)
	roots := p.IssuerRoots(t)

	first := servedEverywhere(t, nodes, roots, nil, p)
	servedOverH3(t, nodes, roots, first)
	if n := p.Orders(); n != 1 {
		t.Errorf("Pebble logged %d orders for the cluster; want 1", n)
	}
	var ordered float64
	for _, n := range nodes {
		v := labelledValue(t, n, "meshcdn_acme_orders_total", "ok")
		ordered += v
		if v != 0 && n.Name() != owner {
			t.Errorf("%s ordered, but %s owns the site's orders", n.Name(), owner)
		}
		if _, err := os.Stat(filepath.Join(n.cfg.CacheDir, "acme", "certs", "shop.test.pem")); err != nil {
			t.Errorf("%s keeps no copy on disk: %v", n.Name(), err)
		}
	}
	if ordered != 1 {
		t.Errorf("the members ordered %v certificates; want 1", ordered)
	}
	// Renewal, at a third of the lifetime left, on every member.
	servedOverH3(t, nodes, roots, servedEverywhere(t, nodes, roots, first, p))
	if n := p.Orders(); n != 2 {
		t.Errorf("Pebble logged %d orders after the renewal; want 2", n)
	}
}

// servedEverywhere waits until every node serves one certificate for
// shop.test that chains to roots and is not old, and returns it.
func servedEverywhere(t *testing.T, nodes []*Node, roots *x509.CertPool, old *x509.Certificate, p *testutil.Pebble) *x509.Certificate {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var got []*x509.Certificate
		for _, n := range nodes {
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", n.HTTPSAddr(),
				&tls.Config{RootCAs: roots, ServerName: "www.shop.test"})
			if err != nil {
				break
			}
			got = append(got, c.ConnectionState().PeerCertificates[0])
			c.Close()
		}
		if len(got) == len(nodes) && (old == nil || !got[0].Equal(old)) && got[1].Equal(got[0]) && got[2].Equal(got[0]) {
			return got[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no common new certificate on every member within 60 s (%d served)\n%s", len(got), p.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// servedOverH3 checks that every node serves cert over HTTP/3 as well.
func servedOverH3(t *testing.T, nodes []*Node, roots *x509.CertPool, cert *x509.Certificate) {
	t.Helper()
	for _, n := range nodes {
		resp, body := get(t, h3Client(t, n.HTTP3Addr(), roots), "https://www.shop.test/app.js")
		if !resp.TLS.PeerCertificates[0].Equal(cert) || body != "shop" {
			t.Errorf("%s over HTTP/3: certificate %v (serial %v), %q; want the one HTTPS serves", n.Name(),
				resp.TLS.PeerCertificates[0].DNSNames, resp.TLS.PeerCertificates[0].SerialNumber, body)
		}
	}
}

// commonPort is a TCP port free on each of ips.
func commonPort(t *testing.T, ips ...string) int {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", ips[0]+":0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		free := true
		for _, ip := range ips[1:] {
			m, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
			if err != nil {
				free = false
				break
			}
			m.Close()
		}
		l.Close()
		if free {
			return port
		}
	}
	t.Fatal("no port free on every address")
	return 0
}
