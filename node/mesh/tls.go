package mesh

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	grpcpeer "google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/meshcdn/meshcdn/node/peer"
	"github.com/meshcdn/meshcdn/node/tlsconf"
	peerv1 "github.com/meshcdn/meshcdn/proto/meshcdn/peer/v1"
)

// startTLS loads the node's mesh identity when configured, makes the peer
// pool, and returns the peer server's options: mutual TLS, and the checks
// of every call (see authorize and claim).
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
		grpc.ChainUnaryInterceptor(m.checkUnary), grpc.ChainStreamInterceptor(m.checkStream)), nil
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

// peerService is the prefix of the PeerService's methods: only current
// members may call them.
var peerService = "/" + peerv1.PeerService_ServiceDesc.ServiceName + "/"

// authorize checks a call to the peer port under mesh TLS. The TLS
// handshake has verified a member certificate of the cluster CA; a
// PeerService call must also come from a current member of this node's
// gossip view (alive or suspect, draining or leaving; not one that was
// never seen, nor one that left or failed longer than goneGrace ago), so a
// certificate issued to a name that is no member, or to one that left,
// opens nothing. It returns the caller's name.
func (m *Mesh) authorize(ctx context.Context, method string) (string, error) {
	p, ok := grpcpeer.FromContext(ctx)
	if !ok {
		return "", status.Error(codes.Unauthenticated, "no caller")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return "", status.Error(codes.Unauthenticated, "not over TLS")
	}
	name, ok := tlsconf.PeerName(info.State)
	if !ok {
		return "", status.Error(codes.Unauthenticated, "the caller's certificate names no member")
	}
	if !strings.HasPrefix(method, peerService) {
		return name, nil // health and reflection: any member certificate
	}
	if g := m.view.Load(); g == nil || !g.Has(name, m.goneGrace()) {
		return "", status.Errorf(codes.PermissionDenied, "%q is not a current member of this node's cluster view", name)
	}
	return name, nil
}

// goneGrace is how long a member that went away (left or failed) may still
// call: a restarted member can be reported dead by a stale record of its
// previous life, which it refutes within seconds, and its calls (for a
// hand-off, a purge log) must not fail meanwhile. A member that really
// left is refused once it has passed.
func (m *Mesh) goneGrace() time.Duration {
	if m.cfg.Fast {
		return 2 * time.Second
	}
	return 30 * time.Second
}

// claim checks the from field of a request against the caller's name: a
// request may only speak for its caller, and one that names nobody speaks
// for it.
func claim(req any, caller string) error {
	msg, ok := req.(proto.Message)
	if !ok {
		return nil
	}
	r := msg.ProtoReflect()
	fd := r.Descriptor().Fields().ByName("from")
	if fd == nil || fd.Kind() != protoreflect.StringKind || fd.IsList() {
		return nil
	}
	switch from := r.Get(fd).String(); from {
	case caller:
	case "":
		r.Set(fd, protoreflect.ValueOfString(caller))
	default:
		return status.Errorf(codes.PermissionDenied, "from %q: the caller's certificate names %q", from, caller)
	}
	return nil
}

func (m *Mesh) checkUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	caller, err := m.authorize(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	if err := claim(req, caller); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (m *Mesh) checkStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	caller, err := m.authorize(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return h(srv, &checkedStream{ServerStream: ss, caller: caller})
}

// checkedStream checks the from field of each message it receives.
type checkedStream struct {
	grpc.ServerStream
	caller string
}

func (s *checkedStream) RecvMsg(msg any) error {
	if err := s.ServerStream.RecvMsg(msg); err != nil {
		return err
	}
	return claim(msg, s.caller)
}
