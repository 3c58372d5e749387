package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"time"

	"github.com/meshcdn/meshcdn/internal/units"
	"github.com/meshcdn/meshcdn/node/access"
)

// runSign prints a signed URL: what a site's application would generate
// for its url_auth, for operators and tests.
func runSign(_ context.Context, args []string, stdout, _ io.Writer) error {
	fs := flag.NewFlagSet("meshcdn sign", flag.ContinueOnError)
	setUsage(fs, stdout, "Usage: meshcdn sign --type A|B|C|F --key KEY [flags] URL\n\n"+
		"Prints URL signed as a site's url_auth of that type checks it (Alibaba Cloud CDN's formats).\n")
	var c access.URLAuthConfig
	fs.StringVar(&c.Type, "type", "", "signing type: A, B, C or F")
	fs.StringVar(&c.Key, "key", "", "the site's url_auth key")
	fs.StringVar(&c.Param, "param", "", "the signature's query parameter (A: auth_key, F: sign; C: signs in the query with --time-param)")
	fs.StringVar(&c.TimeParam, "time-param", "", "the timestamp's query parameter (F: time; C's query form)")
	fs.StringVar(&c.TimeFormat, "time-format", "", "F's timestamp: decimal (default) or hex")
	at := fs.String("time", "", "signing `time`: Unix seconds or RFC 3339 (default: now)")
	randStr := fs.String("rand", "", "type A's random part (default: 32 random hex digits)")
	uid := fs.String("uid", "0", "type A's user id")
	pos, err := parseInterleaved(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		fs.Usage()
		return err
	}
	if err != nil {
		return withHelp(err, "meshcdn sign")
	}
	if len(pos) != 1 {
		return usageError{err: errors.New("one URL is required, e.g. meshcdn sign --type A --key KEY http://cdn.example.com/video/1.mp4")}
	}
	u, err := url.Parse(pos[0])
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usageError{err: fmt.Errorf("%q is not an absolute http or https URL", pos[0])}
	}
	when := time.Now()
	if *at != "" {
		if secs, err := strconv.ParseInt(*at, 10, 64); err == nil {
			when = time.Unix(secs, 0)
		} else if when, err = time.Parse(time.RFC3339, *at); err != nil {
			return usageError{err: fmt.Errorf("--time %q is neither Unix seconds nor RFC 3339", *at)}
		}
	}
	if *randStr == "" {
		var b [16]byte
		_, _ = rand.Read(b[:])
		*randStr = hex.EncodeToString(b[:])
	}
	c.TTL = units.Duration(access.DefaultURLAuthTTL)
	s, err := access.Sign(c, u, when, *randStr, *uid)
	if err != nil {
		return usageError{err: err}
	}
	fmt.Fprintln(stdout, s.String())
	return nil
}
