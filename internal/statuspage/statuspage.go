// Package statuspage holds what the edge's and the router's status pages
// share: the style sheet and the refreshing script (embedded, inline in the
// page, allowed by a content security policy that names their hashes), the
// template functions that format figures and draw sparklines as inline SVG,
// and who may read a page.
package statuspage

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html/template"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"strings"
	"time"
)

//go:embed page.css
var css string

//go:embed page.js
var js string

//go:embed shell.html
var shell string

// Parse makes a page's template: the shared shell (head, header, the
// refreshed main element, footer, script) around the page's own
// definitions of "title", "header", "meta" (the line under the header) and
// "main", with Funcs and funcs.
func Parse(page string, funcs template.FuncMap) *template.Template {
	return template.Must(template.Must(template.New("page").Funcs(Funcs()).Funcs(funcs).Parse(shell)).Parse(page))
}

// Handler serves GET /status (the page; ?part=main is the part the
// page's script refreshes) and GET /status.json from what data returns,
// to those access allows.
func Handler(access Access, t *template.Template, data func(r *http.Request) any) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		if !access.Allowed(w, r) {
			return
		}
		name := "page"
		if r.URL.Query().Get("part") == "main" {
			name = "main"
		}
		WriteHTML(w, t, name, data(r))
	})
	mux.HandleFunc("GET /status.json", func(w http.ResponseWriter, r *http.Request) {
		if access.Allowed(w, r) {
			WriteJSON(w, data(r))
		}
	})
	return mux
}

// contentPolicy allows the page's one style sheet and one script, and
// connections to its own origin; nothing else.
var contentPolicy = fmt.Sprintf("default-src 'none'; style-src '%s'; script-src '%s'; connect-src 'self'; img-src data:; "+
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'", hash(css), hash(js))

func hash(s string) string {
	h := sha256.Sum256([]byte(s))
	return "sha256-" + base64.StdEncoding.EncodeToString(h[:])
}

// Funcs are the template functions of a status page: css and js (the
// inline assets), pct (a ratio as a percentage), percent (a share),
// num (a rate), size (bytes), ago, spark (rates as a line scaled to their
// maximum) and ratios (ratios on a 0–100% scale).
func Funcs() template.FuncMap {
	return template.FuncMap{
		"css":     func() template.CSS { return template.CSS(css) },
		"js":      func() template.JS { return template.JS(js) },
		"pct":     pct,
		"percent": func(f float64) string { return fmt.Sprintf("%.1f%%", f*100) },
		"num":     num,
		"size":    size,
		"ago":     ago,
		"spark":   Spark,
		"ratios":  ratios,
	}
}

// WriteHTML renders the template name of t with data and sends it.
func WriteHTML(w http.ResponseWriter, t *template.Template, name string, data any) {
	var b bytes.Buffer
	if err := t.ExecuteTemplate(&b, name, data); err != nil {
		http.Error(w, "status page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", contentPolicy)
	setCommon(h)
	_, _ = w.Write(b.Bytes())
}

// WriteJSON sends v as indented JSON.
func WriteJSON(w http.ResponseWriter, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		http.Error(w, "status: "+err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	setCommon(h)
	_, _ = w.Write(append(b, '\n'))
}

func setCommon(h http.Header) {
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
}

// Access says who may read a page.
type Access struct {
	// Open serves anyone: the listener is on loopback, or the operator
	// chose so.
	Open bool
	// Tokens are accepted as a bearer token, or as the password of HTTP
	// basic authentication (what a browser asks for).
	Tokens []string
	// Settings names, for the refusal, what opens the page when it is
	// neither open nor has a token.
	Settings string
}

// NewAccess is who may read a page: anyone when open, else the holders of
// tokens (empty ones are left out); settings name what opens a refused
// page.
func NewAccess(open bool, settings string, tokens ...string) Access {
	a := Access{Open: open, Settings: settings}
	for _, t := range tokens {
		if t != "" {
			a.Tokens = append(a.Tokens, t)
		}
	}
	return a
}

// Warn logs, for a page on a listener beyond loopback (exposed), that it is
// served to anyone or refused to everyone.
func (a Access) Warn(log *slog.Logger, addr string, exposed bool) {
	switch {
	case !exposed:
	case a.Open:
		log.Warn("the status page is served to anyone who reaches its listener (status_public)", "addr", addr)
	case len(a.Tokens) == 0:
		log.Warn("the status page is refused: its listener is beyond loopback and no token is set ("+a.Settings+")", "addr", addr)
	}
}

// Allowed checks the request's credentials and answers it when they fail.
func (a Access) Allowed(w http.ResponseWriter, r *http.Request) bool {
	if a.Open {
		return true
	}
	if len(a.Tokens) == 0 {
		http.Error(w, "the status page is off: its listener is beyond loopback and no token is set ("+a.Settings+")", http.StatusForbidden)
		return false
	}
	var given string
	if v, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		given = strings.TrimSpace(v)
	} else if _, pw, ok := r.BasicAuth(); ok {
		given = pw
	}
	if given != "" && slices.ContainsFunc(a.Tokens, func(t string) bool {
		return subtle.ConstantTimeCompare([]byte(t), []byte(given)) == 1
	}) {
		return true
	}
	w.Header().Set("WWW-Authenticate", `Basic realm="meshcdn status", charset="UTF-8"`)
	http.Error(w, "the status page needs a token: a bearer token, or the password of basic authentication", http.StatusUnauthorized)
	return false
}

// pct formats a ratio as a percentage; "–" when there is none.
func pct(r *float64) string {
	if r == nil {
		return "–"
	}
	return fmt.Sprintf("%.1f%%", *r*100)
}

// num formats a rate with the precision it deserves.
func num(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// size formats bytes in binary units.
func size(v float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	return num(v) + " " + units[i]
}

// ago says how long before now t was, coarsely.
func ago(now, t time.Time) string {
	d := now.Sub(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}

const sparkW, sparkH = 240.0, 40.0

// Spark draws values as an inline SVG line scaled to their maximum.
func Spark(vs []float64) template.HTML {
	top := 0.0
	for _, v := range vs {
		top = max(top, v)
	}
	pts := make([]*float64, len(vs))
	for i := range vs {
		v := 0.0
		if top > 0 {
			v = vs[i] / top
		}
		pts[i] = &v
	}
	return svg(pts, "max "+num(top))
}

// ratios draws ratios on a 0–100% scale, with gaps where there were none.
func ratios(vs []*float64) template.HTML { return svg(vs, "0–100%") }

func svg(vs []*float64, label string) template.HTML {
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="spark" viewBox="0 0 %.0f %.0f" preserveAspectRatio="none" role="img" aria-label="%s">`, sparkW, sparkH, template.HTMLEscapeString(label))
	step := sparkW / math.Max(float64(len(vs)-1), 1)
	y := func(v float64) float64 { return sparkH - 1 - math.Min(math.Max(v, 0), 1)*(sparkH-2) }
	for i := 0; i < len(vs); {
		if vs[i] == nil {
			i++
			continue
		}
		j := i // the run of values without a gap
		for j+1 < len(vs) && vs[j+1] != nil {
			j++
		}
		b.WriteString(`<polyline points="`)
		if i == j { // a lone value: a short level stroke
			fmt.Fprintf(&b, "%.1f,%.1f %.1f,%.1f", math.Max(float64(i)*step-step/2, 0), y(*vs[i]), math.Min(float64(i)*step+step/2, sparkW), y(*vs[i]))
		}
		for k := i; k <= j && i != j; k++ {
			if k > i {
				b.WriteByte(' ')
			}
			fmt.Fprintf(&b, "%.1f,%.1f", float64(k)*step, y(*vs[k]))
		}
		b.WriteString(`"/>`)
		i = j + 1
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) // numbers and an escaped label only
}
