package status

import (
	_ "embed"
	"html/template"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/meshcdn/meshcdn/internal/statuspage"
)

//go:embed page.html
var pageHTML string

var pageTmpl = statuspage.Parse(pageHTML, template.FuncMap{"regions": byRegion})

// Options say who may read the page.
type Options = statuspage.Access

// Handler serves GET /status (HTML; ?part=main is the part the page's
// script refreshes) and GET /status.json.
func (r *Recorder) Handler(o Options) http.Handler {
	return statuspage.Handler(o, pageTmpl, func(req *http.Request) any { return r.Page(req.Context(), time.Now()) })
}

// region is the members of one region, for the page.
type region struct {
	Name    string
	Members []Member
}

func byRegion(ms []Member) []region {
	var out []region
	for _, m := range ms {
		i := slices.IndexFunc(out, func(r region) bool { return r.Name == m.Region })
		if i < 0 {
			out = append(out, region{Name: m.Region})
			i = len(out) - 1
		}
		out[i].Members = append(out[i].Members, m)
	}
	slices.SortStableFunc(out, func(a, b region) int { return strings.Compare(a.Name, b.Name) })
	return out
}
