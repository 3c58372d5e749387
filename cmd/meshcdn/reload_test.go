package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSIGHUPReloadsBudgets: `meshcdn edge --config FILE` puts a site's
// origin budget from the file in force after SIGHUP, in the same process;
// a file that no longer loads leaves the budget in force and says why.
func TestSIGHUPReloadsBudgets(t *testing.T) {
	o := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("ok"))
	}))
	t.Cleanup(o.Close)
	file := filepath.Join(t.TempDir(), "edge.yaml")
	write := func(budget string) {
		t.Helper()
		conf := fmt.Sprintf("sites:\n  - hosts: [app.example]\n    origins: [{url: %q}]\n%s", o.URL, budget)
		if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("")
	p := startEdgeProc(t, "--gossip", "off", "--config", file)
	series := `meshcdn_origin_budget_concurrency{site="app.example"}`
	if v := p.metricValue(t, series); v != 0 {
		t.Fatalf("%s = %v before the reload; want 0 (no limit)", series, v)
	}
	hup := func() {
		if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	write("    origin_budget: {concurrency: 3, rate: 20/s}\n")
	hup()
	waitFor(t, 10*time.Second, "the budget reloaded", func() bool {
		return p.metricValue(t, series) == 3 && p.metricValue(t, `meshcdn_origin_budget_lease{limit="rate",site="app.example"}`) == 20
	})
	write("    origin_budget: {concurrency: -2}\n")
	hup()
	waitFor(t, 10*time.Second, "the reload's error", func() bool {
		return strings.Contains(p.logs(), "origin_budget.concurrency: must not be negative (the origin budgets in force stay)")
	})
	if v := p.metricValue(t, series); v != 3 {
		t.Errorf("%s = %v after an invalid reload; want 3 still", series, v)
	}
}
