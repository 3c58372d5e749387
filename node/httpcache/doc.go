// Package httpcache holds the HTTP caching rules of RFC 9111 (caching), RFC 9110
// (conditional and range requests) and RFC 9211 (Cache-Status) as pure functions
// over headers and times. It does no I/O; the node decides what to do with the
// answers.
package httpcache
