package bridge

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/wxbridge/wxbridge/rules"
)

const testAESKey = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
const testPushToken = "push-token-never-logged"

// The rules decide which pushes an app takes, and putting rules in force
// warns about every app that takes pushes whose signature does not cover
// the body.
func TestPushConfigFollowsRules(t *testing.T) {
	tests := []struct {
		name          string
		app           rules.App
		wantConfig    bool
		wantPlaintext bool
		wantWarning   string
	}{
		{name: "key: encrypted only", app: rules.App{PushToken: testPushToken, AESKey: testAESKey}, wantConfig: true},
		{name: "key, migrating", app: rules.App{PushToken: testPushToken, AESKey: testAESKey, AllowPlaintextPush: true},
			wantConfig: true, wantPlaintext: true, wantWarning: "accepts plaintext pushes although it has an aes_key"},
		{name: "no key", app: rules.App{PushToken: testPushToken}, wantConfig: true, wantWarning: "has a push_token but no aes_key"},
		{name: "no push token: no callback", app: rules.App{AESKey: testAESKey, AllowPlaintextPush: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			b := testBridge(t)
			b.log = slog.New(slog.NewTextHandler(&logs, nil))
			a := tt.app
			a.Name, a.AppID = "main", "wx0123456789abcdef"
			b.SetRules(&rules.Set{Apps: map[string]*rules.App{"main": &a}})

			cfg, ok := b.PushConfig("main")
			if ok != tt.wantConfig || cfg.AllowPlaintext != tt.wantPlaintext {
				t.Errorf("PushConfig = %+v, %v; want AllowPlaintext %v, %v", cfg, ok, tt.wantPlaintext, tt.wantConfig)
			}
			if ok && (cfg.Token != a.PushToken || cfg.EncodingAESKey != a.AESKey || cfg.AppID != a.AppID) {
				t.Errorf("PushConfig = %+v, want the app's token, key and appid", cfg)
			}
			out := logs.String()
			switch {
			case tt.wantWarning == "" && out != "":
				t.Errorf("unexpected log: %s", out)
			case tt.wantWarning != "" && (!strings.Contains(out, tt.wantWarning) || !strings.Contains(out, "level=WARN")):
				t.Errorf("log %q, want a warning containing %q", out, tt.wantWarning)
			}
			if strings.Contains(out, testAESKey) || strings.Contains(out, testPushToken) {
				t.Errorf("log reveals a secret: %s", out)
			}
		})
	}
}
