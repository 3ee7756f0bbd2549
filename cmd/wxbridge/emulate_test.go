package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxbridge/wxbridge/wechat"
)

const emulateRules = `
apps:
  main:
    appid: wx00000000000000e1
    secret: emu-secret
    push_token: emu-token
    aes_key: abcdefghijklmnopqrstuvwxyz0123456789ABCDEF0
  bare:
    appid: wx00000000000000e3
    secret: bare-secret
    push_token: bare-token
  silent:
    appid: wx00000000000000e5
    secret: silent-secret
templates:
  statement_issued:
    app: main
    id: TPL_statement
    kind: one_time
    keywords: {thing1: thing, time2: time}
  bare_notice:
    app: bare
    id: TPL_bare
    kind: long_term
    keywords: {phrase1: phrase}
rules:
  - name: statement
    on: statement.issued
    template: statement_issued
    to:
      - user: "{{ .data.user }}"
    data:
      thing1: "{{ .data.name }}"
      time2: "{{ .data.at }}"
`

// lines is a log writer that hands each line to a channel.
type lines struct {
	mu  sync.Mutex
	buf bytes.Buffer
	ch  chan string
}

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	for {
		line, err := l.buf.ReadString('\n')
		if err != nil {
			l.buf.WriteString(line)
			return len(p), nil
		}
		select {
		case l.ch <- line:
		default:
		}
	}
}

type pushed struct {
	path  string
	query url.Values
	body  []byte
}

// TestEmulateCommand runs `wxbridge emulate` with a callback base and acts
// as a user through /_dev/: the push reaches CALLBACK/<app name>, signed
// and encrypted with that app's push_token and aes_key, and an app without
// aes_key is pushed in plaintext.
func TestEmulateCommand(t *testing.T) {
	dir := t.TempDir()
	rulesPath := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rulesPath, []byte(emulateRules), 0o600); err != nil {
		t.Fatal(err)
	}
	got := make(chan pushed, 4)
	cb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- pushed{r.URL.Path, r.URL.Query(), body}
		_, _ = io.WriteString(w, "success")
	}))
	defer cb.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &lines{ch: make(chan string, 64)}
	done := make(chan error, 1)
	go func() {
		done <- cmdEmulate(ctx, []string{"--listen", "127.0.0.1:0", "--rules", rulesPath,
			"--callback", cb.URL + "/wechat/callback/", "--push-format", "xml"}, io.Discard, logs)
	}()
	var base string
	urlRe := regexp.MustCompile(`url=(http://[^ ]+)`)
	for base == "" {
		select {
		case line := <-logs.ch:
			if strings.Contains(line, "WeChat emulator listening") {
				base = urlRe.FindStringSubmatch(line)[1]
			}
		case err := <-done:
			t.Fatalf("emulate stopped: %v", err)
		}
	}

	post := func(path, body string) {
		t.Helper()
		resp, err := http.Post(base+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || !strings.Contains(string(out), "accept") {
			t.Fatalf("POST %s: %d %s", path, resp.StatusCode, out)
		}
	}
	post("/_dev/subscribe", `{"appid":"wx00000000000000e1","openid":"o-alice","results":{"TPL_statement":"accept"}}`)
	p := <-got
	if p.path != "/wechat/callback/main" {
		t.Fatalf("main's push went to %s", p.path)
	}
	cfg := wechat.PushConfig{AppID: "wx00000000000000e1", Token: "emu-token", EncodingAESKey: "abcdefghijklmnopqrstuvwxyz0123456789ABCDEF0"}
	// emulate runs on the real clock, as the receiver does.
	opened, err := cfg.Open(p.query, p.body, time.Now(), 0)
	if err != nil {
		t.Fatalf("open main's push: %v\n%s", err, p.body)
	}
	if opened.Mode != wechat.ModeSafe || opened.Format != wechat.FormatXML || opened.Event != wechat.EventSubscribePopup {
		t.Fatalf("main's push: %+v", opened)
	}

	post("/_dev/subscribe", `{"appid":"wx00000000000000e3","openid":"o-bob","results":{"TPL_bare":"accept"}}`)
	p = <-got
	if p.path != "/wechat/callback/bare" || p.query["encrypt_type"] != nil || !bytes.Contains(p.body, []byte("<FromUserName><![CDATA[o-bob]]>")) {
		t.Fatalf("bare's push (no aes_key: plaintext): %s %v %s", p.path, p.query, p.body)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("emulate after cancel: %v", err)
	}
}

// syncBuffer is a bytes.Buffer that a command writes while the test reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestEmulateWithoutRulesFile runs `wxbridge emulate` in a folder without
// rules.yaml, as a mini program backend developer would: it starts, prints
// the test credentials it accepts, and a backend using exactly what was
// printed gets a token, receives the user's popup event (signed and
// encrypted with the printed push_token and aes_key) and sends.
func TestEmulateWithoutRulesFile(t *testing.T) {
	t.Chdir(t.TempDir())
	t.Setenv("WXBRIDGE_RULES", "") // restored after the test
	os.Unsetenv("WXBRIDGE_RULES")
	got := make(chan pushed, 4)
	cb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- pushed{r.URL.Path, r.URL.Query(), body}
		_, _ = io.WriteString(w, "success")
	}))
	defer cb.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stdout, logs := &syncBuffer{}, &lines{ch: make(chan string, 64)}
	done := make(chan error, 1)
	go func() {
		done <- cmdEmulate(ctx, []string{"--listen", "127.0.0.1:0", "--callback", cb.URL + "/wechat/callback",
			"--sent-events=false"}, stdout, logs)
	}()
	var base string
	urlRe := regexp.MustCompile(`url=(http://[^ ]+)`)
	for base == "" {
		select {
		case line := <-logs.ch:
			if strings.Contains(line, "WeChat emulator listening") {
				base = urlRe.FindStringSubmatch(line)[1]
			}
		case err := <-done:
			t.Fatalf("emulate without rules.yaml stopped: %v", err)
		}
	}
	// The credentials block is written before the listening line.
	out := stdout.String()
	printed := func(name string) string {
		t.Helper()
		m := regexp.MustCompile(`(?m)^  ` + name + ` +(\S+)`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no %s in the startup output:\n%s", name, out)
		}
		return m[1]
	}
	secret, pushToken, aesKey := printed("secret"), printed("push_token"), printed("aes_key")
	appid := regexp.MustCompile(`e\.g\. (wx[0-9a-f]{16})`).FindStringSubmatch(out)
	if appid == nil || !strings.Contains(out, "not secrets") || !strings.Contains(out, "rules.yaml not found") {
		t.Fatalf("startup output does not say what it accepts and why:\n%s", out)
	}
	// The backend's own appid works as well as the example.
	const myApp = "wx5f3a1b2c3d4e5f60"

	tokenOf := func(appid, secret string) map[string]any {
		t.Helper()
		resp, err := http.Get(base + "/cgi-bin/token?" + url.Values{"grant_type": {"client_credential"}, "appid": {appid}, "secret": {secret}}.Encode())
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	if m := tokenOf(appid[1], secret); m["access_token"] == nil {
		t.Fatalf("token for the printed example appid: %v", m)
	}
	if m := tokenOf(myApp, "a-real-secret"); m["errcode"] != float64(40125) {
		t.Fatalf("token with another secret: %v, want 40125", m)
	}
	tok, _ := tokenOf(myApp, secret)["access_token"].(string)
	if tok == "" {
		t.Fatal("no token for the backend's own appid with the printed secret")
	}

	post := func(path, body string) string {
		t.Helper()
		resp, err := http.Post(base+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("POST %s: %d %s", path, resp.StatusCode, b)
		}
		return string(b)
	}
	post("/_dev/subscribe", `{"appid":"`+myApp+`","openid":"o-alice","results":{"tmpl-shipped":"accept"}}`)
	p := <-got
	cfg := wechat.PushConfig{AppID: myApp, Token: pushToken, EncodingAESKey: aesKey}
	opened, err := cfg.Open(p.query, p.body, time.Now(), 5*time.Minute)
	if err != nil || p.path != "/wechat/callback" {
		t.Fatalf("push to %s: %v\n%s", p.path, err, p.body)
	}
	if len(opened.Subscriptions) != 1 || opened.Subscriptions[0].TemplateID != "tmpl-shipped" || opened.Subscriptions[0].Status != "accept" {
		t.Fatalf("popup event: %+v", opened)
	}
	if r := post("/cgi-bin/message/subscribe/send?access_token="+url.QueryEscape(tok),
		`{"touser":"o-alice","template_id":"tmpl-shipped","data":{"thing1":{"value":"Acme 订单"}}}`); !strings.Contains(r, `"errcode":0`) {
		t.Fatalf("send: %s", r)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("emulate after cancel: %v", err)
	}
}

func TestEmulateBadFlags(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing-rules.yaml")
	for _, tt := range []struct {
		args []string
		want string // in stderr
	}{
		{[]string{"emulate", "--push-mode", "aes"}, "aes"},
		{[]string{"emulate", "--push-format", "yaml"}, "yaml"},
		{[]string{"emulate", "extra"}, "extra"},
		// A rules file that was named must exist: only the default may be missing.
		{[]string{"emulate", "--listen", "127.0.0.1:0", "--rules", missing}, missing},
	} {
		var stderr bytes.Buffer
		if code := run(context.Background(), tt.args, io.Discard, &stderr); code != 2 || !strings.Contains(stderr.String(), tt.want) {
			t.Errorf("%v: exit %d, want 2 and %q in: %s", tt.args, code, tt.want, stderr.String())
		}
	}
}
