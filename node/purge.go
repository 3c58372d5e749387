package node

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"github.com/meshcdn/meshcdn/node/admin"
	"github.com/meshcdn/meshcdn/node/purge"
)

// purgeKeys turns absolute URLs and URL prefixes into cache keys and key
// prefixes; errors name the field.
func (n *Node) purgeKeys(urls, prefixes []string) (keys, keyPrefixes []string, err error) {
	parse := func(field string, i int, raw string) (string, error) {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return "", fmt.Errorf("%w: %s[%d]: %q is not an absolute http(s) URL", admin.ErrBadURL, field, i, raw)
		}
		st, ok := n.sites.Lookup(u.Host)
		if !ok {
			return "", fmt.Errorf("%w: %s[%d]: no site is configured for host %q", admin.ErrBadURL, field, i, u.Host)
		}
		return st.CacheKey(u.Host, u.EscapedPath(), u.RawQuery), nil
	}
	for i, raw := range urls {
		k, err := parse("urls", i, raw)
		if err != nil {
			return nil, nil, err
		}
		keys = append(keys, k)
	}
	for i, raw := range prefixes {
		k, err := parse("prefixes", i, raw)
		if err != nil {
			return nil, nil, err
		}
		if !strings.Contains(raw, "?") {
			k = strings.TrimSuffix(k, "?") // a prefix of paths, not of a query
		}
		keyPrefixes = append(keyPrefixes, k)
	}
	return keys, keyPrefixes, nil
}

// purge applies a purge of URLs, URL prefixes and tags on every member
// (see purge.Service.Issue); errors wrap admin.ErrBadURL.
func (n *Node) purge(ctx context.Context, urls, prefixes, tags []string, soft bool) (string, []purge.Receipt, error) {
	keys, keyPrefixes, err := n.purgeKeys(urls, prefixes)
	if err != nil {
		return "", nil, err
	}
	id, receipts := n.purges.Issue(ctx, keys, keyPrefixes, tags, soft)
	return id, receipts, nil
}
