package main

import (
	"strings"
	"testing"

	"github.com/meshcdn/meshcdn/internal/testutil"
)

// TestSignCLI: `meshcdn sign` prints the signed URLs of Alibaba Cloud CDN's
// own examples for types A, B and C, and F's as md5sum computes it.
func TestSignCLI(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--type", "A", "--key", "aliyuncdnexp1234", "--time", "1444435200", "--rand", "0", "--uid", "0", "http://cdn.example.com/video/standard/1K.html"},
			"http://cdn.example.com/video/standard/1K.html?auth_key=1444435200-0-0-80cd3862d699b7118eed99103f2a3a4f"},
		{[]string{"--type", "B", "--key", "aliyuncdnexp1234", "--time", "2015-08-15T08:00:00+08:00", "http://cdn.example.com/4/44/44c0909bcfc20a01afaf256ca99a8b8b.mp3"},
			"http://cdn.example.com/201508150800/9044548ef1527deadafa49a890a377f0/4/44/44c0909bcfc20a01afaf256ca99a8b8b.mp3"},
		{[]string{"--type", "C", "--key", "aliyuncdnexp1234", "--time", "1439596800", "http://cdn.example.com/test.flv"},
			"http://cdn.example.com/a37fa50a5fb8f71214b1e7c95ec7a1bd/55CE8100/test.flv"},
		{[]string{"--type", "C", "--key", "aliyuncdnexp1234", "--time", "1439596800", "--param", "KEY1", "--time-param", "KEY2", "http://cdn.example.com/test.flv"},
			"http://cdn.example.com/test.flv?KEY1=a37fa50a5fb8f71214b1e7c95ec7a1bd&KEY2=55CE8100"},
		{[]string{"--type", "F", "--key", "aliyuncdnexp1234", "--time", "1439596800", "http://cdn.example.com/test.flv"},
			"http://cdn.example.com/test.flv?sign=aae536018b61343f2ce91fe2926a34a6&time=1439596800"},
	} {
		var stdout, stderr testutil.SyncBuffer
		if c := run(t.Context(), append([]string{"sign"}, tt.args...), &stdout, &stderr); c != 0 || strings.TrimSpace(stdout.String()) != tt.want {
			t.Errorf("sign %v: exit %d, %q %s; want %s", tt.args, c, stdout.String(), stderr.String(), tt.want)
		}
	}
}
