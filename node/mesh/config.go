package mesh

import (
	"time"

	"github.com/meshcdn/meshcdn/node/tlsconf"
	"github.com/meshcdn/meshcdn/ring"
)

// Config joins a node to a mesh of edges: gossip membership, a
// consistent-hash ring of owners, and gRPC fetches from the owner before the
// origin. Zero fields take their defaults.
type Config struct {
	// PeerAddr is the gRPC peer listener. Default ":7070".
	PeerAddr string
	// GossipAddr is the memberlist listener (TCP and UDP). Default ":7946".
	GossipAddr string
	// Join lists gossip seeds (host:port, or a DNS name resolving to many).
	Join []string
	// Region is advertised to the other nodes. Each key has one owner in
	// each region: a node fills a miss from its own region's owner.
	Region string
	// ShieldRegion, when set, is the region in front of the origin: the
	// owner of a key in any other region fills from the owner in the shield
	// region before the origin. "none" (or empty) asks the origin.
	ShieldRegion string
	// GossipKeys encrypt gossip (each 16, 24 or 32 bytes): the first is used
	// to send, all are accepted, so keys rotate by rolling restarts (see
	// gossip.Config.Keys).
	GossipKeys [][]byte
	// Ring tunes the consistent-hash ring.
	Ring ring.Config
	// PeerTimeout bounds the wait for a peer's response head before the origin
	// is asked instead. Default 5s.
	PeerTimeout time.Duration
	// LeaveTimeout bounds the announcement of a graceful leave. Default 2s.
	LeaveTimeout time.Duration
	// HandoffWindow is how long after a ring change a new owner that misses
	// asks the key's previous owner (from its cache only) before the origin.
	// Default 2m.
	HandoffWindow time.Duration
	// JoinWave groups nodes that start within this long of each other (a
	// scale-out): a node of a wave takes keys over from the members that
	// were there before the wave, not from the others of its wave.
	// Default 10s.
	JoinWave time.Duration
	// CopyShare is the share of the memory budget that holds copies of objects
	// other nodes own, so hot objects are served locally everywhere while cold
	// ones exist once per cluster. Default 0.2.
	CopyShare float64
	// PurgeLease is how long a node trusts its purge log after reading
	// another member's: past it, until a member answers, the node revalidates
	// objects older than the lease before serving them. A purge that a member
	// did not acknowledge is answered no sooner than this. Default 2s.
	PurgeLease time.Duration
	// DrainOnStop, when set, makes a stopping node drain first and keep
	// answering for this long before it leaves, so the new owners of its keys
	// take the objects asked for meanwhile over from it rather than from the
	// origin. It must be shorter than the node's shutdown timeout. Default 0:
	// a stopping node leaves at once.
	DrainOnStop time.Duration
	// TLS, when its files are set, makes the peer port speak mutual TLS: the
	// node presents its certificate (from meshcdn ca issue, naming the node)
	// and accepts only peers whose certificate chains to the cluster CA and
	// names the member they are meant to be. Zero: cleartext.
	TLS tlsconf.MeshFiles
	// Insecure lets the gossip and peer listeners listen beyond loopback
	// without a gossip key or without mesh TLS: anyone who reaches them can
	// then join the cluster, purge it and feed it bodies. Logged at every
	// start.
	Insecure bool
	// TLSCheck is how often the TLS files are looked at: a change (or a
	// self-signed certificate due for renewal) reloads them. Default 10s.
	TLSCheck time.Duration
	// Fast uses gossip timings for tests on loopback.
	Fast bool
}

// FastJoinWave is JoinWave's default with the Fast gossip profile.
const FastJoinWave = 300 * time.Millisecond

// WithDefaults returns c with its zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.PeerAddr == "" {
		c.PeerAddr = ":7070"
	}
	if c.GossipAddr == "" {
		c.GossipAddr = ":7946"
	}
	if c.PeerTimeout == 0 {
		c.PeerTimeout = 5 * time.Second
	}
	if c.LeaveTimeout == 0 {
		c.LeaveTimeout = 2 * time.Second
	}
	if c.HandoffWindow == 0 {
		c.HandoffWindow = 2 * time.Minute
	}
	if c.JoinWave == 0 {
		c.JoinWave = 10 * time.Second
		if c.Fast {
			c.JoinWave = FastJoinWave
		}
	}
	if c.CopyShare == 0 {
		c.CopyShare = 0.2
	}
	if c.TLSCheck == 0 {
		c.TLSCheck = 10 * time.Second
		if c.Fast {
			c.TLSCheck = 100 * time.Millisecond
		}
	}
	if c.PurgeLease == 0 {
		c.PurgeLease = 2 * time.Second
	}
	return c
}
