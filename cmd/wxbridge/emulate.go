package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/wxbridge/wxbridge/rules"
	"github.com/wxbridge/wxbridge/wechat/wechattest"
)

const emulateSynopsis = `emulate [--listen ADDR] [--callback URL] [--rules rules.yaml] [--push-mode MODE] [--push-format FORMAT]

Runs the WeChat emulator alone, for people developing their rules and their
mini program backend. It knows the apps and templates of the rules file;
point wxbridge (or anything else) at it with WXBRIDGE_WECHAT_API=http://ADDR.

Without a rules file (no --rules or WXBRIDGE_RULES, and no ./rules.yaml)
it accepts any appid with the secret ` + defaultSecret + `, any openid and any
template id (a one-time template whose data keys are checked by their
names: thing1 is a thing), and prints these test credentials when it
starts. They are the defaults of the project's rules.yaml.

With --callback, each app's events (subscribe_msg_popup_event, _change_event,
_sent_event) are pushed to CALLBACK/<app name>, signed with the app's
push_token and, in compatible and safe mode, encrypted with its aes_key:
--callback http://127.0.0.1:8080/wechat/callback matches wxbridge serve.
Without a rules file every app's events are pushed to CALLBACK itself, with
push_token ` + defaultPushToken + ` and aes_key ` + defaultAESKey + `.

Act as a user with the endpoints under /_dev/ (GET /_dev/ lists them), e.g.
  curl -d '{"openid":"o-alice","results":{"TEMPLATE_ID":"accept"}}' http://ADDR/_dev/subscribe
("appid" may be left out while the emulator knows exactly one app.)`

// The emulator's test credentials when it runs without a rules file: the
// defaults of the project's rules.yaml, so that a bridge started with that
// file can talk to it unchanged (its templates become one-time ones on
// first use). They protect nothing and may be printed.
const (
	exampleAppID     = "wx0123456789abcdef"
	defaultSecret    = "emulator-secret"
	defaultPushToken = "emulator-push-token"
	defaultAESKey    = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
)

func cmdEmulate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newFlags("emulate", stderr, emulateSynopsis)
	listen := f.str("listen", "WXBRIDGE_EMULATOR_LISTEN", "127.0.0.1:8081", "address the emulator serves the WeChat API on")
	rulesPath := f.str("rules", "WXBRIDGE_RULES", "rules.yaml", "rules file whose apps and templates the emulator knows (the default may be missing: then any app)")
	callback := f.str("callback", "WXBRIDGE_EMULATOR_CALLBACK", "", "base URL of the push callbacks; app NAME is pushed to URL/NAME, or without a rules file every app to URL (empty: no pushes)")
	modeFlag := f.str("push-mode", "WXBRIDGE_EMULATOR_PUSH_MODE", "safe", "push encryption: plaintext, compatible or safe (apps without aes_key fall back to plaintext)")
	formatFlag := f.str("push-format", "WXBRIDGE_EMULATOR_PUSH_FORMAT", "json", "push data format: json or xml")
	sentEvents := f.boolean("sent-events", "WXBRIDGE_EMULATOR_SENT_EVENTS", true, "push subscribe_msg_sent_event for every accepted send")
	if pos, err := f.parse(args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usagef("unexpected arguments %q", pos)
	}
	mode, err := wechattest.ParseMode(*modeFlag)
	if err != nil {
		return &usageError{err}
	}
	format, err := wechattest.ParseFormat(*formatFlag)
	if err != nil {
		return &usageError{err}
	}
	log := newLogger(stderr)
	set, err := loadEmulatorRules(*rulesPath, f.given("rules", "WXBRIDGE_RULES"))
	if err != nil {
		return &usageError{err}
	}
	push := pushConfig{base: *callback, mode: mode, format: format, sentEvents: *sentEvents}
	var emu *wechattest.Emulator
	if set != nil {
		emu = wechattest.New(wechattest.Options{AutoUsers: true, Logger: log.With("component", "emulator")})
		defer emu.Close()
		configureEmulator(emu, set)
		if push.base != "" {
			if err := configureCallbacks(emu, set, push, log); err != nil {
				return &usageError{err}
			}
		}
		log.Info("apps of the rules file", "file", *rulesPath, "appids", appIDs(set))
	} else {
		defaults := wechattest.AppDefaults{Secret: defaultSecret}
		if push.base != "" {
			defaults.Callback = push.callback(push.base, defaultPushToken, defaultAESKey)
			if err := defaults.Callback.Validate(); err != nil {
				return &usageError{err}
			}
		}
		emu = wechattest.New(wechattest.Options{AutoUsers: true, AutoApps: &defaults, AutoTemplates: true,
			Logger: log.With("component", "emulator")})
		defer emu.Close()
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *listen, err)
	}
	srv := &http.Server{Handler: emu, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
	}()
	base := "http://" + ln.Addr().String()
	if set == nil {
		printDefaultCredentials(stdout, *rulesPath, base, push)
	}
	log.Info("WeChat emulator listening", "url", base, "dev", base+wechattest.DevPrefix)
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve emulator: %w", err)
	}
	return nil
}

// configureEmulator registers the apps and templates of a rule set with the
// emulator, so it checks sends the way WeChat would for those templates.
func configureEmulator(emu *wechattest.Emulator, set *rules.Set) {
	for _, a := range set.Apps {
		if a.Kind == rules.AppOfficialAccount {
			emu.AddOfficialAccount(a.AppID, a.Secret)
		} else {
			emu.AddApp(a.AppID, a.Secret)
		}
	}
	for _, t := range set.Templates {
		app, ok := set.Apps[t.App]
		if !ok {
			continue // rules.Load refuses this; nothing to register it with
		}
		kind := wechattest.OneTime
		switch t.Kind {
		case rules.KindLongTerm:
			kind = wechattest.LongTerm
		case rules.KindTemplateMessage:
			kind = wechattest.TemplateMessage
		}
		title := t.Title
		if title == "" {
			title = t.Name
		}
		emu.AddTemplate(app.AppID, wechattest.Template{ID: t.ID, Title: title, Kind: kind, Keywords: t.Keywords,
			Labels: t.Labels, Enums: t.Enums})
	}
}

type pushConfig struct {
	base       string
	mode       wechattest.Mode
	format     wechattest.Format
	sentEvents bool
}

func (p pushConfig) callback(url, token, aesKey string) wechattest.Callback {
	return wechattest.Callback{URL: url, Token: token, EncodingAESKey: aesKey, Mode: p.mode, Format: p.format,
		SentEvents: p.sentEvents}
}

// loadEmulatorRules loads the rules file, or returns nil when none was
// given and the default one does not exist: the emulator then takes any
// app. A file that was named must exist.
func loadEmulatorRules(path string, given bool) (*rules.Set, error) {
	if !given {
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
	}
	return rules.Load(path)
}

func appIDs(set *rules.Set) []string {
	ids := make([]string, 0, len(set.Apps))
	for _, a := range set.Apps {
		ids = append(ids, a.AppID)
	}
	sort.Strings(ids)
	return ids
}

// printDefaultCredentials tells the developer what the emulator accepts
// without a rules file. These are test credentials, which is why they may
// be printed (a real appsecret never is).
func printDefaultCredentials(w io.Writer, rulesPath, base string, push pushConfig) {
	fmt.Fprintf(w, `WeChat emulator at %s, without a rules file (%s not found).
It accepts these test credentials (not secrets; put them in your backend's development settings):
  appid       any (e.g. %s)
  secret      %s
  openid      any
  template    any id: a one-time template whose data keys are checked by their names (thing1 is a thing)
`, base, rulesPath, exampleAppID, defaultSecret)
	if push.base == "" {
		fmt.Fprintf(w, "  pushes      none (--callback URL pushes every app's events to URL)\n")
	} else {
		fmt.Fprintf(w, "  pushes      to %s, %s mode, %s\n  push_token  %s\n", push.base, push.mode, push.format, defaultPushToken)
		if push.mode != wechattest.Plaintext {
			fmt.Fprintf(w, "  aes_key     %s\n", defaultAESKey)
		}
	}
	fmt.Fprintf(w, "Act as a user: curl -d '{\"appid\":\"%s\",\"openid\":\"o-alice\",\"results\":{\"TEMPLATE_ID\":\"accept\"}}' %s%ssubscribe\n",
		exampleAppID, base, wechattest.DevPrefix)
}

// configureCallbacks points every app's pushes at base/<app name>, which
// is where `wxbridge serve` takes the callbacks of that app, with the
// push_token and aes_key of rules.yaml, as the WeChat admin console would
// be filled in.
func configureCallbacks(emu *wechattest.Emulator, set *rules.Set, push pushConfig, log *slog.Logger) error {
	names := make([]string, 0, len(set.Apps))
	for name := range set.Apps {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		a := set.Apps[name]
		if a.PushToken == "" {
			log.Warn("app has no push_token: WeChat cannot push its events", "app", name)
			continue
		}
		cb := push.callback(strings.TrimRight(push.base, "/")+"/"+name, a.PushToken, a.AESKey)
		if cb.Mode != wechattest.Plaintext && a.AESKey == "" {
			log.Warn("app has no aes_key: pushing in plaintext", "app", name)
			cb.Mode = wechattest.Plaintext
		}
		if cb.Mode == wechattest.Plaintext && a.AESKey != "" && !a.AllowPlaintextPush {
			log.Warn("pushing in plaintext to an app with an aes_key: wxbridge refuses these (401) "+
				"unless the app sets allow_plaintext_push: true", "app", name)
		}
		if err := emu.SetCallback(a.AppID, cb); err != nil {
			return fmt.Errorf("app %s: %w", name, err)
		}
		log.Info("pushing callbacks", "app", name, "url", cb.URL, "mode", cb.Mode.String(), "format", cb.Format.String())
	}
	return nil
}
