package main

import (
	"bytes"
	"context"
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

func TestEmulateBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"emulate", "--push-mode", "aes"},
		{"emulate", "--push-format", "yaml"},
		{"emulate", "extra"},
	} {
		var stderr bytes.Buffer
		if code := run(context.Background(), args, io.Discard, &stderr); code != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, stderr.String())
		}
	}
}
