package wechattest_test

import (
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/wxbridge/wxbridge/wechat/wechattest"
)

func expiresIn(t *testing.T, a answer) int {
	t.Helper()
	n, err := strconv.Atoi(a.num("expires_in").String())
	if err != nil {
		t.Fatalf("expires_in in %s: %v", a.body, err)
	}
	return n
}

func TestStableTokenIsTheSameWhileValidAndRenewsInTheLastFiveMinutes(t *testing.T) {
	f := newFixture(t, wechattest.Options{})
	first := f.stable(false)
	tok := first.str("access_token")
	if first.errcode != 0 || tok == "" || expiresIn(t, first) != 7200 {
		t.Fatalf("first stable_token: %s", first.body)
	}

	f.clock.Add(time.Hour)
	again := f.stable(false)
	if again.str("access_token") != tok {
		t.Fatalf("normal mode changed the token while valid")
	}
	if got := expiresIn(t, again); got != 3600 {
		t.Fatalf("expires_in = %d, want the remaining 3600", got)
	}

	// Within the last 5 minutes: a new token, and the old one still works
	// until it expires.
	f.clock.Add(56 * time.Minute)
	renewed := f.stable(false)
	newTok := renewed.str("access_token")
	if newTok == tok || expiresIn(t, renewed) != 7200 {
		t.Fatalf("in the last 5 minutes want a new token with a full life, got %s", renewed.body)
	}
	if again := f.stable(false); again.str("access_token") != newTok {
		t.Fatalf("after the renewal normal mode must keep returning the new token")
	}
	if code := f.templatesCode(tok); code != 0 {
		t.Fatalf("old token during the overlap: errcode %d", code)
	}
	f.clock.Add(4 * time.Minute)
	if code := f.templatesCode(tok); code != 42001 {
		t.Fatalf("old token after its expiry: errcode %d, want 42001", code)
	}
	if code := f.templatesCode(newTok); code != 0 {
		t.Fatalf("new token: errcode %d", code)
	}
}

func TestStableTokenExpiresAndIsReplaced(t *testing.T) {
	f := newFixture(t, wechattest.Options{TokenTTL: time.Hour})
	tok := f.token()
	f.clock.Add(time.Hour)
	if code := f.templatesCode(tok); code != 42001 {
		t.Fatalf("expired token: errcode %d, want 42001", code)
	}
	if next := f.token(); next == tok {
		t.Fatal("stable_token returned an expired token")
	}
}

func TestStableTokenForceRefresh(t *testing.T) {
	f := newFixture(t, wechattest.Options{})
	tok := f.token()

	forced := f.stable(true).str("access_token")
	if forced == tok {
		t.Fatal("force_refresh returned the same token")
	}
	if code := f.templatesCode(tok); code != 40001 {
		t.Fatalf("token before a force refresh: errcode %d, want 40001 at once", code)
	}

	// Less than 30 s later: no refresh, the current token comes back.
	f.clock.Add(29 * time.Second)
	if again := f.stable(true).str("access_token"); again != forced {
		t.Fatal("a force refresh within 30 s refreshed")
	}
	if code := f.templatesCode(forced); code != 0 {
		t.Fatalf("refused force refresh invalidated the token: errcode %d", code)
	}

	// 20 force refreshes a day in all (one was done above).
	cur := forced
	for i := 2; i <= 20; i++ {
		f.clock.Add(31 * time.Second)
		next := f.stable(true).str("access_token")
		if next == cur {
			t.Fatalf("force refresh %d did not refresh", i)
		}
		cur = next
	}
	f.clock.Add(31 * time.Second)
	if again := f.stable(true).str("access_token"); again != cur {
		t.Fatal("the 21st force refresh of the day refreshed")
	}
	// The day ends at midnight China time (16:00 UTC).
	f.clock.Add(7 * time.Hour)
	if next := f.stable(true).str("access_token"); next == cur {
		t.Fatal("force refresh refused on a new day")
	}
}

func TestLegacyTokenFetchInvalidatesThePreviousAfterFiveMinutes(t *testing.T) {
	f := newFixture(t, wechattest.Options{})
	first := f.legacy()
	t1 := first.str("access_token")
	if t1 == "" || expiresIn(t, first) != 7200 {
		t.Fatalf("first token: %s", first.body)
	}
	f.clock.Add(time.Minute)
	t2 := f.legacy().str("access_token")
	if t2 == t1 {
		t.Fatal("/cgi-bin/token returned the same token twice")
	}
	if code := f.templatesCode(t1); code != 0 {
		t.Fatalf("previous token within the overlap: errcode %d", code)
	}
	f.clock.Add(5*time.Minute - time.Second)
	if code := f.templatesCode(t1); code != 0 {
		t.Fatalf("previous token at 4:59 of the overlap: errcode %d", code)
	}
	f.clock.Add(time.Second)
	if code := f.templatesCode(t1); code != 40001 {
		t.Fatalf("previous token after the overlap: errcode %d, want 40001", code)
	}
	if code := f.templatesCode(t2); code != 0 {
		t.Fatalf("latest token: errcode %d", code)
	}
	f.clock.Add(2 * time.Hour)
	if code := f.templatesCode(t2); code != 42001 {
		t.Fatalf("latest token after 2h: errcode %d, want 42001", code)
	}
}

func TestTokenFamiliesAreIsolated(t *testing.T) {
	f := newFixture(t, wechattest.Options{})
	stable := f.token()
	legacy := f.legacy().str("access_token")

	// A legacy fetch (twice, past the overlap) leaves the stable token alone.
	f.legacy()
	f.clock.Add(6 * time.Minute)
	if code := f.templatesCode(stable); code != 0 {
		t.Fatalf("stable token after legacy fetches: errcode %d", code)
	}
	if code := f.templatesCode(legacy); code != 40001 {
		t.Fatalf("superseded legacy token: errcode %d, want 40001", code)
	}
	latest := f.legacy().str("access_token")
	// A forced stable refresh leaves the legacy token alone.
	f.stable(true)
	if code := f.templatesCode(latest); code != 0 {
		t.Fatalf("legacy token after a stable force refresh: errcode %d", code)
	}
	if code := f.templatesCode(stable); code != 40001 {
		t.Fatalf("stable token after force refresh: errcode %d, want 40001", code)
	}
}

func TestInvalidateTokens(t *testing.T) {
	f := newFixture(t, wechattest.Options{})
	stable, legacy := f.token(), f.legacy().str("access_token")
	f.emu.InvalidateTokens(appID)
	for _, tok := range []string{stable, legacy} {
		if code := f.templatesCode(tok); code != 40001 {
			t.Fatalf("invalidated token: errcode %d, want 40001", code)
		}
	}
	if next := f.token(); next == stable || f.templatesCode(next) != 0 {
		t.Fatal("stable_token after invalidation must issue a working new token")
	}
}

func TestTokenErrors(t *testing.T) {
	f := newFixture(t, wechattest.Options{})
	legacyQuery := func(appid, sec, grant string) url.Values {
		q := url.Values{}
		for k, v := range map[string]string{"appid": appid, "secret": sec, "grant_type": grant} {
			if v != "" {
				q.Set(k, v)
			}
		}
		return q
	}
	stableBody := func(appid, sec, grant string) map[string]any {
		return map[string]any{"appid": appid, "secret": sec, "grant_type": grant}
	}
	const cc = "client_credential"
	tests := []struct {
		name   string
		method string
		path   string
		query  url.Values
		body   any
		code   int
		msg    string
	}{
		{"stable by GET", http.MethodGet, wechattest.PathStableToken, nil, nil, 43002, "require POST method"},
		{"stable not JSON", http.MethodPost, wechattest.PathStableToken, nil, "appid=x", 47001, "data format error"},
		{"stable appid missing", http.MethodPost, wechattest.PathStableToken, nil, stableBody("", secret, cc), 41002, "appid missing"},
		{"stable secret missing", http.MethodPost, wechattest.PathStableToken, nil, stableBody(appID, "", cc), 41004, "appsecret missing"},
		{"stable bad grant_type", http.MethodPost, wechattest.PathStableToken, nil, stableBody(appID, secret, "password"), 40002, "invalid grant_type"},
		{"stable unknown appid", http.MethodPost, wechattest.PathStableToken, nil, stableBody("wx404", secret, cc), 40013, "invalid appid"},
		{"stable bad secret", http.MethodPost, wechattest.PathStableToken, nil, stableBody(appID, "nope", cc), 40125, "invalid appsecret"},
		{"stable other app's secret", http.MethodPost, wechattest.PathStableToken, nil, stableBody(otherID, secret, cc), 40125, "invalid appsecret"},
		{"token by POST", http.MethodPost, wechattest.PathToken, legacyQuery(appID, secret, cc), nil, 43001, "require GET method"},
		{"token appid missing", http.MethodGet, wechattest.PathToken, legacyQuery("", secret, cc), nil, 41002, "appid missing"},
		{"token secret missing", http.MethodGet, wechattest.PathToken, legacyQuery(appID, "", cc), nil, 41004, "appsecret missing"},
		{"token bad grant_type", http.MethodGet, wechattest.PathToken, legacyQuery(appID, secret, "x"), nil, 40002, "invalid grant_type"},
		{"token unknown appid", http.MethodGet, wechattest.PathToken, legacyQuery("wx404", secret, cc), nil, 40013, "invalid appid"},
		{"token bad secret", http.MethodGet, wechattest.PathToken, legacyQuery(appID, "nope", cc), nil, 40125, "invalid appsecret"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantErr(t, f.do(tt.method, tt.path, tt.query, tt.body), tt.code, tt.msg)
		})
	}
}

func TestOpenIDOfAnotherAppIs40003(t *testing.T) {
	f := newFixture(t, wechattest.Options{})
	a := f.do(http.MethodPost, wechattest.PathStableToken, nil,
		map[string]any{"grant_type": "client_credential", "appid": otherID, "secret": "other-secret"})
	other := a.str("access_token")
	// alice is a user of appID, not of otherID: openids are per app.
	wantErr(t, f.send(other, msg(alice, tplOnce, goodOnce)), 40003, "invalid openid")
}
