package edgetls

import (
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"time"
)

// TicketEpoch is how long one session ticket key seals new tickets; a
// ticket opens for about four epochs more.
const TicketEpoch = 6 * time.Hour

// TicketKeys derives the session ticket keys of the epoch of now from
// secret, which every member of the mesh holds alike (the gossip key), so
// that a ticket one member issued resumes on any other: the epoch's key
// first (it seals), then the next epoch's (for a member whose clock runs
// ahead) and the three before (tickets issued in the last day or so).
func TicketKeys(secret []byte, now time.Time) [][32]byte {
	e := now.UnixNano() / int64(TicketEpoch)
	var keys [][32]byte
	for _, n := range []int64{e, e + 1, e - 1, e - 2, e - 3} {
		info := binary.BigEndian.AppendUint64([]byte("meshcdn session ticket key "), uint64(n))
		k, err := hkdf.Key(sha256.New, secret, nil, string(info), 32)
		if err != nil {
			panic(err) // a 32-byte key from SHA-256 cannot fail
		}
		keys = append(keys, [32]byte(k))
	}
	return keys
}

// KeepTicketKeys sets cfg's session ticket keys from secret and sets them
// anew at each epoch, until ctx ends.
func KeepTicketKeys(ctx context.Context, cfg *tls.Config, secret []byte) {
	for {
		now := time.Now()
		cfg.SetSessionTicketKeys(TicketKeys(secret, now))
		next := now.Truncate(TicketEpoch).Add(TicketEpoch)
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
