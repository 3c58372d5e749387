// Package earlydata marks a request a front took in TLS early data (0-RTT),
// which an attacker who recorded it may replay, with a way to wait for the
// client's handshake to complete: after it the request is known to come
// from the client.
//
// The edge answers such a request from its cache at once (serving a stored
// object changes nothing, however often it is replayed) but waits for the
// handshake before anything goes past the cache, so the origin never sees
// a request in early data (RFC 8470 §5.1 lets an intermediary wait rather
// than forward it with Early-Data: 1).
package earlydata

import (
	"context"
	"errors"
)

// ErrHandshake is the error of a wait whose connection closed before its
// handshake completed.
var ErrHandshake = errors.New("the TLS handshake did not complete")

type key struct{}

// With returns ctx for a request taken in early data; wait blocks until the
// handshake completes (nil), fails or ctx ends (an error).
func With(ctx context.Context, wait func(context.Context) error) context.Context {
	return context.WithValue(ctx, key{}, wait)
}

// In reports whether the request of ctx was taken in early data.
func In(ctx context.Context) bool {
	_, ok := ctx.Value(key{}).(func(context.Context) error)
	return ok
}

// Wait returns at once for a request not taken in early data; for one that
// was, it waits until the client's handshake completes.
func Wait(ctx context.Context) error {
	wait, ok := ctx.Value(key{}).(func(context.Context) error)
	if !ok {
		return nil
	}
	return wait(ctx)
}
