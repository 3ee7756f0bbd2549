package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/wxbridge/wxbridge/rules"
	"github.com/wxbridge/wxbridge/wechat"
)

const rulesUsage = `Usage:
  wxbridge rules check  [--remote] [rules.yaml]
  wxbridge rules render --event FILE [--type TYPE] [rules.yaml]

check reports every problem of a rules file with its line and column (exit
2 when there is one); --remote also compares the templates with each app's
real template list on WeChat.

render shows what an event (a CloudEvent, or a plain JSON payload with
--type) would send: each matching rule, its recipients, the page, every
keyword before and after fitting, and the card WeChat would show.
`

func cmdRules(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, rulesUsage)
		return usagef("rules: want check or render")
	}
	switch args[0] {
	case "check":
		return rulesCheck(ctx, args[1:], stdout, stderr)
	case "render":
		return rulesRender(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, rulesUsage)
		return errHelp
	}
	fmt.Fprint(stderr, rulesUsage)
	return usagef("rules: unknown subcommand %q (check, render)", args[0])
}

// rulesFile is the one positional argument both subcommands take.
func rulesFile(pos []string) (string, error) {
	switch len(pos) {
	case 0:
		return envOr("WXBRIDGE_RULES", "rules.yaml"), nil
	case 1:
		return pos[0], nil
	}
	return "", usagef("want one rules file, got %q", pos)
}

// loadRules loads a rules file and prints its problems, one per line, to
// stderr: the exit status (2) and a count follow from the returned error.
func loadRules(path string, stderr io.Writer) (*rules.Set, error) {
	set, err := rules.Load(path)
	var list rules.ErrorList
	if errors.As(err, &list) {
		fmt.Fprintln(stderr, list.Error())
		return nil, usagef("%s: %s", path, plural(len(list), "problem"))
	}
	if err != nil {
		return nil, &usageError{err}
	}
	return set, nil
}

func rulesCheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newFlags("rules check", stderr, "rules check [--remote] [rules.yaml]")
	remote := f.boolean("remote", "", false, "also compare templates with each app's template list on WeChat (needs the apps' credentials)")
	api := f.str("wechat-api", "WXBRIDGE_WECHAT_API", wechat.DefaultBaseURL, "base URL of the WeChat API, for --remote")
	pos, err := f.parse(args)
	if err != nil {
		return err
	}
	path, err := rulesFile(pos)
	if err != nil {
		return err
	}
	set, err := loadRules(path, stderr)
	if err != nil {
		return err
	}
	if *remote {
		list, err := compareRemote(ctx, set, *api)
		if err != nil {
			return err
		}
		if len(list) > 0 {
			fmt.Fprintln(stderr, list.Error())
			return usagef("%s: %s against WeChat's template lists", path, plural(len(list), "problem"))
		}
	}
	checked := ""
	if *remote {
		checked = ", templates match WeChat"
	}
	fmt.Fprintf(stdout, "%s: ok (%s, %s, %s%s)\n", path, plural(len(set.Apps), "app"), plural(len(set.Templates), "template"),
		plural(len(set.Rules), "rule"), checked)
	return nil
}

// compareRemote fetches the template list of every app that has templates
// and compares. A failure to fetch is a runtime error (exit 1): the file
// may well be right.
func compareRemote(ctx context.Context, set *rules.Set, api string) (rules.ErrorList, error) {
	wx, err := wechat.New(wechat.Config{BaseURL: api})
	if err != nil {
		return nil, &usageError{err}
	}
	defer wx.Close()
	used := map[string]bool{}
	for _, t := range set.Templates {
		used[t.App] = true
	}
	names := make([]string, 0, len(used))
	for name := range used {
		names = append(names, name)
	}
	sort.Strings(names)
	var all rules.ErrorList
	for _, name := range names {
		a := set.Apps[name]
		mode := wechat.TokenStable
		if a.TokenMode == rules.TokenModeToken {
			mode = wechat.TokenLegacy
		}
		wx.SetApp(name, wechat.App{AppID: a.AppID, Secret: a.Secret, TokenMode: mode})
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		list, err := wx.Templates(ctx, name)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("template list of app %s: %w", name, err)
		}
		all = append(all, set.CompareTemplates(name, remoteTemplates(list))...)
	}
	return all, nil
}

func remoteTemplates(list []wechat.Template) []rules.RemoteTemplate {
	out := make([]rules.RemoteTemplate, len(list))
	for i, t := range list {
		rt := rules.RemoteTemplate{ID: t.ID, Title: t.Title}
		switch t.Type {
		case 2:
			rt.Kind = rules.KindOneTime
		case 3:
			rt.Kind = rules.KindLongTerm
		}
		for _, k := range t.Keywords {
			rt.Keywords = append(rt.Keywords, rules.RemoteKeyword{Key: k.Key, Type: k.Type, Label: k.Label, Enum: k.Enum})
		}
		out[i] = rt
	}
	return out
}

func rulesRender(args []string, stdout, stderr io.Writer) error {
	f := newFlags("rules render", stderr, "rules render --event FILE [--type TYPE] [rules.yaml]")
	eventFile := f.str("event", "", "", "event to render: a CloudEvent, or a JSON payload with --type")
	typ := f.str("type", "", "", "event type (required for a plain payload; overrides a CloudEvent's)")
	pos, err := f.parse(args)
	if err != nil {
		return err
	}
	if *eventFile == "" {
		return usagef("--event FILE is required")
	}
	path, err := rulesFile(pos)
	if err != nil {
		return err
	}
	ev, err := readEvent(*eventFile, *typ)
	if err != nil {
		return &usageError{err}
	}
	set, err := loadRules(path, stderr)
	if err != nil {
		return err
	}
	return renderEvent(stdout, set, ev)
}

// readEvent reads an event file the way the bridge reads a NATS message
// body: a structured CloudEvent, or a plain payload whose type is given.
func readEvent(path, typ string) (*rules.Event, error) {
	body, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read event: %w", err)
	}
	var ce struct {
		SpecVersion string          `json:"specversion"`
		ID          string          `json:"id"`
		Type        string          `json:"type"`
		Subject     string          `json:"subject"`
		Time        string          `json:"time"`
		Data        json.RawMessage `json:"data"`
		DataBase64  string          `json:"data_base64"`
	}
	if !json.Valid(body) {
		return nil, fmt.Errorf("%s: not JSON", path)
	}
	ev := &rules.Event{ID: "render", Time: time.Now()}
	data := body
	if json.Unmarshal(body, &ce) == nil && ce.SpecVersion != "" {
		ev.ID, ev.Type, ev.Subject = ce.ID, ce.Type, ce.Subject
		if ce.Time != "" {
			if ev.Time, err = time.Parse(time.RFC3339Nano, ce.Time); err != nil {
				return nil, fmt.Errorf("%s: CloudEvent time %q is not RFC 3339", path, ce.Time)
			}
		}
		data = ce.Data
		if ce.DataBase64 != "" {
			if data, err = base64.StdEncoding.DecodeString(ce.DataBase64); err != nil {
				return nil, fmt.Errorf("%s: data_base64: %w", path, err)
			}
		}
	}
	if typ != "" {
		ev.Type = typ
	}
	if ev.Type == "" {
		return nil, fmt.Errorf("%s is not a CloudEvent: say its type with --type", path)
	}
	if len(bytes.TrimSpace(data)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber() // as the bridge does: amounts and long ids stay exact
		if err := dec.Decode(&ev.Data); err != nil {
			return nil, fmt.Errorf("%s: data: %w", path, err)
		}
	}
	return ev, nil
}

// renderEvent prints what each matching rule would send. Rules that would
// fail for this event make the command fail (exit 1) after printing them
// all, so a script can use render as a test.
func renderEvent(w io.Writer, set *rules.Set, ev *rules.Event) error {
	fmt.Fprintf(w, "event %s (id %s, time %s)\n", ev.Type, ev.ID, ev.Time.Format(time.RFC3339))
	matched := set.Match(ev)
	if len(matched) == 0 {
		fmt.Fprintf(w, "\nno rule matches %s\n", ev.Type)
		return nil
	}
	failed := 0
	for _, m := range matched {
		r := m.Rule
		fmt.Fprintf(w, "\nrule %s: template %s (%s) of app %s\n", r.Name, r.Template.Name, r.Template.ID, r.App.Name)
		if r.Description != "" {
			fmt.Fprintf(w, "  # %s\n", r.Description)
		}
		if r.When != "" {
			if m.Err != nil {
				fmt.Fprintf(w, "  when:   error: %s\n", rules.ReasonOf(m.Err))
				failed++
				continue
			}
			fmt.Fprintf(w, "  when:   %s → true\n", r.When)
		}
		p := r.Preview(ev)
		if p.RecipientsErr != nil {
			fmt.Fprintf(w, "  to:     error: %v\n", p.RecipientsErr)
		} else if len(p.Recipients) == 0 {
			fmt.Fprintf(w, "  to:     nobody (every recipient id is empty for this event)\n")
		}
		for i, rc := range p.Recipients {
			label := "to:"
			if i > 0 {
				label = ""
			}
			fmt.Fprintf(w, "  %-7s %s\n", label, rc)
		}
		if p.PageErr != nil {
			fmt.Fprintf(w, "  page:   error: %v\n", p.PageErr)
		} else if p.Page != "" {
			fmt.Fprintf(w, "  page:   %s\n", p.Page)
		}
		fmt.Fprintf(w, "  data:\n")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, k := range p.Keywords {
			switch {
			case k.Err != nil:
				fmt.Fprintf(tw, "    %s\t%s\t%q → error: %s\n", k.Key, k.Type, k.Raw, rules.ReasonOf(k.Err))
			case k.Raw != k.Value:
				fmt.Fprintf(tw, "    %s\t%s\t%q → %q\n", k.Key, k.Type, k.Raw, k.Value)
			default:
				fmt.Fprintf(tw, "    %s\t%s\t%q\n", k.Key, k.Type, k.Value)
			}
		}
		_ = tw.Flush()
		for _, line := range policyLines(r, p, ev) {
			fmt.Fprintf(w, "  %s\n", line)
		}
		if p.Err() != nil {
			failed++
			fmt.Fprintf(w, "  → would fail: invalid_data (%v)\n", p.Err())
			continue
		}
		fmt.Fprintf(w, "  card:\n")
		for _, line := range strings.Split(strings.TrimRight(p.Card(), "\n"), "\n") {
			fmt.Fprintf(w, "    %s\n", line)
		}
	}
	if failed > 0 {
		return fmt.Errorf("%s of %d would fail for this event", plural(failed, "rule"), len(matched))
	}
	return nil
}

func policyLines(r *rules.Rule, p *rules.Preview, ev *rules.Event) []string {
	var out []string
	pol := r.Policy
	if q := pol.QuietHours; q != nil {
		line := "quiet:  " + q.String()
		if quiet, end := q.Check(ev.Time); quiet {
			if q.Action == rules.QuietDefer {
				line += fmt.Sprintf(": the event time is inside, sent at %s", end.Format("2006-01-02 15:04 MST"))
			} else {
				line += ": the event time is inside, dropped"
			}
		}
		out = append(out, line)
	}
	if pol.Dedupe != nil {
		if p.DedupeErr != nil {
			out = append(out, fmt.Sprintf("dedupe: error: %v", p.DedupeErr))
		} else {
			out = append(out, fmt.Sprintf("dedupe: once per %q and recipient within %s", p.DedupeKey, duration(pol.Dedupe.Window)))
		}
	}
	if c := pol.Cap; c != nil {
		out = append(out, fmt.Sprintf("cap:    at most %s per user per %s", plural(c.Max, "message"), duration(c.Per)))
	}
	if pol.Delivery == rules.AtMostOnce {
		out = append(out, "delivery: at_most_once (a send left in doubt by a crash is not repeated)")
	}
	return out
}

// duration writes a policy's window as rules.yaml would: 10m, 1h30m, 7d.
func duration(d time.Duration) string {
	const day = 24 * time.Hour
	if d >= day && d%day == 0 {
		return fmt.Sprintf("%dd", d/day)
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
