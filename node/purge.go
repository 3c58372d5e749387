package node

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"github.com/meshcdn/meshcdn/node/admin"
	"github.com/meshcdn/meshcdn/node/purge"
	"github.com/meshcdn/meshcdn/node/site"
)

// purgeKeys turns absolute URLs and URL prefixes into cache keys and key
// prefixes; errors name the field.
func (n *Node) purgeKeys(urls, prefixes []string) (keys, keyPrefixes []string, err error) {
	parse := func(field string, i int, raw string) (string, error) {
		_, key, err := n.keyOf(raw)
		if err != nil {
			return "", fmt.Errorf("%w: %s[%d]: %v", admin.ErrBadURL, field, i, err)
		}
		return key, nil
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

// keyOf places an absolute URL: its site and its cache key.
func (n *Node) keyOf(raw string) (*site.Site, string, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, "", fmt.Errorf("%q is not an absolute http(s) URL", raw)
	}
	st, ok := n.sites.Lookup(u.Host)
	if !ok {
		return nil, "", fmt.Errorf("no site is configured for host %q", u.Host)
	}
	return st, st.CacheKey(u.Host, site.NormalizePath(u.EscapedPath(), st.MergeSlashes), u.RawQuery), nil
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
