package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/wxbridge/wxbridge/bridge"
	"github.com/wxbridge/wxbridge/wechat/wechattest"
)

// The dashboard and the alert rules in deploy/ name only metrics a running
// bridge exposes: a renamed metric would leave a panel empty and an alert
// silent, and nobody would notice until it mattered.
func TestDeployNamesExposedMetrics(t *testing.T) {
	used := map[string][]string{} // metric -> where it is used
	alerts := readAlertExprs(t, filepath.Join("..", "..", "deploy", "prometheus", "wxbridge-alerts.yaml"))
	for name, expr := range alerts {
		for _, m := range promQLMetrics(expr) {
			used[m] = append(used[m], "alert "+name)
		}
	}
	panels := readDashboardExprs(t, filepath.Join("..", "..", "deploy", "grafana", "wxbridge-dashboard.json"))
	for where, exprs := range panels {
		for _, e := range exprs {
			for _, m := range promQLMetrics(e) {
				used[m] = append(used[m], "panel "+where)
			}
		}
	}
	if len(alerts) < 6 || len(panels) < 10 || len(used) < 15 {
		t.Fatalf("read %d alerts, %d panels, %d metrics: the files were not read as meant", len(alerts), len(panels), len(used))
	}

	exposed := exposedMetrics(t)
	// Series Prometheus makes itself, not the bridge.
	exposed["up"] = true
	var missing []string
	for m, where := range used {
		if !exposed[m] {
			slices.Sort(where)
			missing = append(missing, fmt.Sprintf("  %s (used by %s)", m, strings.Join(slices.Compact(where), "; ")))
		}
	}
	slices.Sort(missing)
	if len(missing) > 0 {
		t.Errorf("deploy/ names %d metrics that /metrics does not expose:\n%s", len(missing), strings.Join(missing, "\n"))
	}
}

// exposedMetrics runs wxbridge as serve --emulator does, makes every kind
// of series appear (a labelled series shows only once something happened
// to it: a send, a configuration error, a push, a dead letter, a failed
// token fetch), and reads
// the sample names of /metrics.
func exposedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	const appid, tpl = "wx00000000000000e2", "TPL_statement_issued"
	rulesSrc := strings.Replace(testRules, "    secret: e2e-secret\n",
		"    secret: e2e-secret\n    push_token: deploy-push-token\n    aes_key: abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG\n", 1)
	h := startHarness(t, t.TempDir(), rulesSrc)
	emu := h.svc.emu
	var bind bridge.BindReply
	h.request("wxbridge.cmd.bind", map[string]string{"app": "main", "user_id": "u-17", "openid": "o-alice"}, &bind)
	if bind.Error != "" {
		t.Fatalf("bind: %s", bind.Error)
	}
	grant := func() {
		t.Helper()
		emu.Accept(appid, "o-alice", tpl)
		var subs bridge.SubscriptionsReply
		h.request("wxbridge.cmd.subscriptions", map[string]any{"app": "main", "user_id": "u-17", "results": map[string]string{tpl: "accept"}}, &subs)
		if subs.Error != "" {
			t.Fatalf("subscriptions: %s", subs.Error)
		}
	}
	event := func(id string) {
		h.publish("statement.issued", id, map[string]any{"statement_id": id, "applicant_id": "u-17",
			"buyer_name": "Acme", "seller_name": "Supplier Ltd", "month": "2026-10", "created_at": "2026-11-01 09:00"})
	}
	grant()
	event("evt-sent") // a send, and WeChat's push of its delivery
	h.results(1)
	grant()
	emu.SetPages(appid, "pages/index/index")
	event("evt-config") // 41030: a configuration error
	h.results(2)
	if err := h.nc.Publish("events.statement.issued", []byte("not json")); err != nil { // a dead letter
		t.Fatal(err)
	}
	emu.FlushPushes()
	// WeChat drops the token and its token endpoint fails: the next send
	// needs a token it cannot get.
	grant()
	emu.InvalidateTokens(appid)
	emu.SetFaults(wechattest.Faults{SystemErrorRate: 1, Paths: []string{wechattest.PathStableToken}})
	event("evt-no-token")

	url := "http://" + h.svc.http.Addr().String() + "/metrics"
	driven := []string{"wxbridge_results_total", "wxbridge_events_total", "wxbridge_wechat_send_seconds_bucket",
		"wxbridge_config_errors_total", "wxbridge_pushes_total", "wxbridge_token_fetch_failures_total"}
	var names map[string]bool
	deadline := time.Now().Add(waitLimit)
	for {
		names = scrape(t, url)
		have := 0
		for _, d := range driven {
			if names[d] {
				have++
			}
		}
		if have == len(driven) {
			return names
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s /metrics still lacks some of %v", waitLimit, driven)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// scrape reads the metric names of the samples in a Prometheus text page.
func scrape(t *testing.T, url string) map[string]bool {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	names := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return names
}

func readAlertExprs(t *testing.T, path string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&file); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	out := map[string]string{}
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || r.Expr == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("%s: rule %q needs an alert name, an expr, a severity and a summary", path, r.Alert)
			}
			if r.For != "" {
				if _, err := time.ParseDuration(r.For); err != nil {
					t.Errorf("%s: %s: for %q: %v", path, r.Alert, r.For, err)
				}
			}
			out[r.Alert] = r.Expr
		}
	}
	return out
}

// readDashboardExprs returns every query of the dashboard, by panel title
// (and "variable NAME" for the template variables).
func readDashboardExprs(t *testing.T, path string) map[string][]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	out := map[string][]string{}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			out[p.Title] = append(out[p.Title], tg.Expr)
		}
	}
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Fatalf("%s: variable %s: %v", path, v.Name, err)
		}
		// label_values(metric, label): only the metric is one.
		if m := labelValuesRE.FindStringSubmatch(q.Query); m != nil {
			q.Query = m[1]
		}
		out["variable "+v.Name] = append(out["variable "+v.Name], q.Query)
	}
	return out
}

var labelValuesRE = regexp.MustCompile(`^\s*label_values\(\s*([^,]+),`)

var (
	promStrings  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'`)
	promMatchers = regexp.MustCompile(`\{[^}]*\}`)
	promRanges   = regexp.MustCompile(`\[[^\]]*\]`)
	promGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promIdent    = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
	promKeywords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true, "by": true, "without": true,
		"on": true, "ignoring": true, "group_left": true, "group_right": true, "inf": true, "nan": true, "Inf": true, "NaN": true}
)

// promQLMetrics lists the metric names a PromQL expression selects:
// identifiers that are neither functions, keywords, label names nor parts
// of numbers and durations.
func promQLMetrics(expr string) []string {
	s := promStrings.ReplaceAllString(expr, `""`)
	s = promMatchers.ReplaceAllString(s, " ")
	s = promRanges.ReplaceAllString(s, " ")
	s = promGrouping.ReplaceAllString(s, " ")
	var out []string
	for _, loc := range promIdent.FindAllStringIndex(s, -1) {
		name := s[loc[0]:loc[1]]
		if loc[0] > 0 {
			if c := s[loc[0]-1]; c >= '0' && c <= '9' || c == '.' || c == '$' {
				continue // 5m, 1e3, $var
			}
		}
		if rest := strings.TrimLeft(s[loc[1]:], " \t\n"); strings.HasPrefix(rest, "(") || promKeywords[name] {
			continue // a function or an operator
		}
		out = append(out, name)
	}
	return out
}

func TestPromQLMetrics(t *testing.T) {
	for expr, want := range map[string]string{
		`sum by (app, errcode) (increase(wxbridge_config_errors_total{instance=~"$x"}[10m])) > 0`: "wxbridge_config_errors_total",
		`max(a_b) > 0 and sum(increase(c_total[15m] offset 5m)) == 0`:                             "a_b c_total",
		`histogram_quantile(0.95, sum by (le) (rate(x_bucket[$__rate_interval])))`:                "x_bucket",
		`up{job="wxbridge"} == 0`:                  "up",
		`rate(a[5m]) / on (instance) group_left b`: "a b",
		`1e3 * foo`: "foo",
	} {
		if got := strings.Join(promQLMetrics(expr), " "); got != want {
			t.Errorf("%s: %q, want %q", expr, got, want)
		}
	}
}
