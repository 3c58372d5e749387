// Package origin talks to a site's origin servers: a pool per site that picks
// a healthy origin by priority and weight, retries, ejects failing origins and
// limits concurrency; Fetch for cache fills and a reverse proxy for requests
// that bypass the cache.
package origin

import (
	"io"
)

// DrainClose discards up to 64 KiB of a body so its connection can be reused,
// then closes it.
func DrainClose(body io.ReadCloser) {
	_, _ = io.CopyN(io.Discard, body, 64<<10)
	_ = body.Close()
}
