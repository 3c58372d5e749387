package site

import (
	"reflect"
	"testing"

	"go.yaml.in/yaml/v3"
)

// richSite uses every kind of field a site has, in the forms people write
// them: URLs alone and mappings, units, "off", a duration alone for hsts.
const richSite = `
name: shop
hosts: [www.shop.example, shop.example, "*.img.shop.example"]
origins:
  - {url: "http://172.16.0.10:8080", weight: 3}
  - "http://172.16.0.11:8080"
  - {url: "https://backup.shop.example", priority: 2}
origin_host: client
origin_protocol: https
health_check: {path: /healthz, interval: 5s, timeout: 2s, fails: 3, passes: 2}
passive: {max_fails: 3, backoff: 10s}
max_origin_requests: 64
queue_timeout: 1s
origin_budget: {concurrency: 32, rate: 200/s, bandwidth: 400Mbit}
stale_while_revalidate: 30s
stale_if_error: 1d
cache_key: {query: exclude, params: [utm_source, utm_medium, spm]}
rules:
  - {path_prefix: /api/, action: bypass}
  - {extensions: [html], action: cache, ttl: 5m, follow_origin: true}
  - {regex: '^/static/.*\.[0-9a-f]{8}\.(js|css)$', action: cache, ttl: 30d}
  - {path_prefix: /legacy/, action: cache, ttl: 1h, check_content_type: false, ignore_cookie: true}
default_rules: false
merge_slashes: true
https: redirect
hsts: 180d
url_auth: {type: A, key: 1a2b3c4d5e6f7g8h, ttl: 30m}
referer: {allow: [shop.example], allow_empty: true}
rate_limit: {requests: 50, per: 1s, burst: 100}
compression: {brotli: true, gzip: false, zstd: true, min_size: 2KiB}
heuristic: "off"
slice_size: 4MiB
`

// emptyToNil sets every empty list reachable from v to none, as the file
// means them.
func emptyToNil(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			emptyToNil(v.Elem())
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Field(i).CanSet() {
				emptyToNil(v.Field(i))
			}
		}
	case reflect.Slice:
		if v.Len() == 0 {
			v.Set(reflect.Zero(v.Type()))
		}
		for i := range v.Len() {
			emptyToNil(v.Index(i))
		}
	}
}

// TestConfigYAMLRoundTrip: a site written out as YAML reads back as the
// same configuration, for one in the file's every form: a site can travel
// and be kept as a document of the cluster with the fields of the file.
func TestConfigYAMLRoundTrip(t *testing.T) {
	for _, in := range []string{richSite, "hosts: [a.example]\norigins: [\"http://10.0.0.1\"]\nheuristic: {factor: 0.2, max: 2d}\nhsts: {max_age: 365d, include_subdomains: true, preload: true}\n"} {
		var c Config
		if err := yaml.Unmarshal([]byte(in), &c); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Compile(); err != nil {
			t.Fatalf("the fixture does not compile: %v", err)
		}
		out, err := yaml.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		var back Config
		if err := yaml.Unmarshal(out, &back); err != nil {
			t.Fatalf("written as\n%s\nit does not read back: %v", out, err)
		}
		// What is read back is written the same (empty lists stand for
		// none, as in the file), and holds every value given.
		again, err := yaml.Marshal(back)
		if err != nil {
			t.Fatal(err)
		}
		if string(again) != string(out) {
			t.Errorf("written as\n%s\nit reads back and is written as\n%s", out, again)
		}
		emptyToNil(reflect.ValueOf(&back).Elem())
		emptyToNil(reflect.ValueOf(&c).Elem())
		if !reflect.DeepEqual(back, c) {
			t.Errorf("written as\n%s\nit reads back as %+v; want %+v", out, back, c)
		}
	}
}
