package mesh

import (
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/meshcdn/meshcdn/node/peer"
	"github.com/meshcdn/meshcdn/node/tlsconf"
	peerv1 "github.com/meshcdn/meshcdn/proto/meshcdn/peer/v1"
)

// BenchmarkPeerFetch times one peer fetch on loopback, from the call to the
// last byte read and checked, in cleartext and over mutual TLS, for a small
// object and a large one.
func BenchmarkPeerFetch(b *testing.B) {
	dir := b.TempDir()
	if err := tlsconf.InitCA(dir, 0); err != nil {
		b.Fatal(err)
	}
	ids := map[string]*tlsconf.Mesh{}
	for _, name := range []string{"owner", "asker"} {
		if _, err := tlsconf.Issue(dir, name, tlsconf.RoleMember, nil, 0); err != nil {
			b.Fatal(err)
		}
		id, err := tlsconf.LoadMesh(tlsconf.MeshFiles{CAFile: filepath.Join(dir, tlsconf.CAFile),
			CertFile: filepath.Join(dir, name+".pem"), KeyFile: filepath.Join(dir, name+"-key.pem")}, name)
		if err != nil {
			b.Fatal(err)
		}
		ids[name] = id
	}
	for _, size := range []struct {
		name string
		n    int
	}{{"1KiB", 1 << 10}, {"100MiB", 100 << 20}} {
		body := make([]byte, size.n)
		h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(body) })
		for _, mode := range []string{"cleartext", "mTLS"} {
			b.Run(fmt.Sprintf("%s/%s", size.name, mode), func(b *testing.B) {
				var serverTLS *tls.Config
				var clientTLS func(string) (*tls.Config, error)
				if mode == "mTLS" {
					serverTLS = ids["owner"].ServerConfig()
					clientTLS = func(string) (*tls.Config, error) { return ids["asker"].ClientConfig("owner"), nil }
				}
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					b.Fatal(err)
				}
				s := grpc.NewServer(peer.ServerOptions(serverTLS)...)
				peerv1.RegisterPeerServiceServer(s, peer.NewServer(h, noLocal{}, nil, slog.New(slog.DiscardHandler)))
				done := make(chan struct{})
				go func() { defer close(done); _ = s.Serve(ln) }()
				p := peer.NewPool(10*time.Second, clientTLS)
				defer func() { p.CloseAll(); s.Stop(); <-done }()
				req := &peerv1.FetchRequest{Key: "k", Host: "h", PathQuery: "/obj", From: "asker"}
				b.SetBytes(int64(size.n))
				for b.Loop() {
					resp, err := p.Fetch(b.Context(), ln.Addr().String(), req)
					if err != nil {
						b.Fatal(err)
					}
					n, err := io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err != nil || n != int64(size.n) {
						b.Fatalf("%d bytes, %v", n, err)
					}
				}
			})
		}
	}
}
