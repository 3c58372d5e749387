package mesh

import (
	"context"
	"crypto/tls"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	grpcpeer "google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/meshcdn/meshcdn/node/peer"
	"github.com/meshcdn/meshcdn/node/tlsconf"
)

// startTLS loads the node's mesh identity when configured, makes the peer
// pool, and returns the peer server's options: mutual TLS, and the check
// that a call's from field names the caller.
func (m *Mesh) startTLS() ([]grpc.ServerOption, error) {
	if m.cfg.TLS == (tlsconf.MeshFiles{}) {
		m.peers = peer.NewPool(m.cfg.PeerTimeout, nil)
		return peer.ServerOptions(nil), nil
	}
	id, err := tlsconf.LoadMesh(m.cfg.TLS, m.self.Name)
	if err != nil {
		return nil, fmt.Errorf("mesh: %w", err)
	}
	m.tls = id
	m.peers = peer.NewPool(m.cfg.PeerTimeout, m.clientTLS)
	return append(peer.ServerOptions(id.ServerConfig()),
		grpc.ChainUnaryInterceptor(checkFromUnary), grpc.ChainStreamInterceptor(checkFromStream)), nil
}

// ReloadTLS reads the mesh certificate files again (for SIGHUP): new
// connections use them; on an error the identity in use stays. Without mesh
// TLS it does nothing.
func (m *Mesh) ReloadTLS() error {
	if m.tls == nil {
		return nil
	}
	return m.tls.Reload()
}

// watchTLS reloads the mesh identity when one of its files changes or a
// self-signed certificate is due for renewal, so a rotation needs no
// SIGHUP. It ends with the mesh.
func (m *Mesh) watchTLS() {
	t := time.NewTicker(m.cfg.TLSCheck)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
		}
		if !m.tls.Stale() {
			continue
		}
		if err := m.tls.Reload(); err != nil {
			m.log.Error("mesh certificates changed but do not load; the ones in use stay", "err", err)
			continue
		}
		m.log.Info("mesh certificates reloaded")
	}
}

// clientTLS is the TLS of a connection to the member at addr.
func (m *Mesh) clientTLS(addr string) (*tls.Config, error) {
	for name, a := range m.PeerAddrs() {
		if a == addr {
			return m.tls.ClientConfig(name), nil
		}
	}
	return nil, fmt.Errorf("%w: no member is known at this address", tlsconf.ErrNotMember)
}

// from is a peer request that names the member sending it.
type from interface{ GetFrom() string }

// callerMatches refuses a call whose from field names another member than
// the caller's verified certificate.
func callerMatches(ctx context.Context, req any) error {
	f, ok := req.(from)
	if !ok || f.GetFrom() == "" {
		return nil
	}
	p, ok := grpcpeer.FromContext(ctx)
	if !ok {
		return status.Error(codes.Unauthenticated, "no caller")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return status.Error(codes.Unauthenticated, "not over TLS")
	}
	if name, _ := tlsconf.PeerName(info.State); name != f.GetFrom() {
		return status.Errorf(codes.PermissionDenied, "from %q: the caller's certificate names %q", f.GetFrom(), name)
	}
	return nil
}

func checkFromUnary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := callerMatches(ctx, req); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func checkFromStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	return h(srv, &checkedStream{ServerStream: ss})
}

// checkedStream checks the from field of each message it receives.
type checkedStream struct{ grpc.ServerStream }

func (s *checkedStream) RecvMsg(msg any) error {
	if err := s.ServerStream.RecvMsg(msg); err != nil {
		return err
	}
	return callerMatches(s.Context(), msg)
}
