package wechattest_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/wxbridge/wxbridge/wechat/wechattest"
)

func TestSubscribeReturnsWhatTheClientGetsAndUpdatesState(t *testing.T) {
	f := newFixture(t, wechattest.Options{})
	got := f.emu.Subscribe(appID, alice, map[string]string{tplOnce: "acceptWithAlert", tplEnum: "reject"})
	want := map[string]string{"errMsg": "requestSubscribeMessage:ok", tplOnce: "acceptWithAlert", tplEnum: "reject"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Subscribe = %v, want %v", got, want)
	}
	f.emu.Subscribe(appID, alice, map[string]string{tplOnce: "accept"})
	if s := f.emu.Subscription(appID, alice, tplOnce); s.Status != wechattest.StatusAccept || s.Credits != 2 {
		t.Fatalf("two accepts: %+v", s)
	}
	if s := f.emu.Subscription(appID, alice, tplEnum); s.Status != wechattest.StatusReject || s.Credits != 0 {
		t.Fatalf("reject: %+v", s)
	}
	// A popup reject ends the accumulated credits.
	f.emu.Subscribe(appID, alice, map[string]string{tplOnce: "reject"})
	if c := f.emu.Credits(appID, alice, tplOnce); c != 0 {
		t.Fatalf("credits after a popup reject: %d", c)
	}
	// A new user (never added) becomes one by subscribing.
	f.emu.Subscribe(appID, "o-new", map[string]string{tplLong: "accept"})
	if s := f.emu.Subscriptions(appID, "o-new"); len(s) != 1 || s[0].Status != wechattest.StatusAccept {
		t.Fatalf("new user: %+v", s)
	}
}

func TestSubscribeBanAndFilter(t *testing.T) {
	f := newFixture(t, wechattest.Options{})
	f.emu.Ban(appID, alice, tplEnum)
	// tplOnce2 has the same title as tplOnce: it is filtered.
	got := f.emu.Subscribe(appID, alice, map[string]string{tplOnce: "accept", tplOnce2: "accept", tplEnum: "accept"})
	want := map[string]string{"errMsg": "requestSubscribeMessage:ok", tplOnce: "accept", tplOnce2: "filter", tplEnum: "ban"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Subscribe = %v, want %v", got, want)
	}
	if c := f.emu.Credits(appID, alice, tplOnce2); c != 0 {
		t.Fatalf("a filtered template got a credit")
	}
	f.emu.BanTemplate(appID, tplOnce)
	if got := f.emu.Subscribe(appID, bob, map[string]string{tplOnce: "accept"}); got[tplOnce] != "ban" || f.emu.Credits(appID, bob, tplOnce) != 0 {
		t.Fatalf("banned template: %v", got)
	}
}

func TestSubscribeRequestsTheClientRefuses(t *testing.T) {
	f := newFixture(t, wechattest.Options{})
	tests := []struct {
		name    string
		results map[string]string
		errCode string
		errMsg  string
	}{
		{"empty", map[string]string{}, "10001", "TmplIds can't be empty"},
		{"unknown template", map[string]string{tplOnce: "accept", "TPL_404": "accept"}, "20001", "No template data return"},
		{"mixed kinds", map[string]string{tplOnce: "accept", tplLong: "accept"}, "20002", "Templates type must be same"},
		{"too many", map[string]string{"a": "accept", "b": "accept", "c": "accept", "d": "accept", "e": "accept", "f": "accept"}, "20003", "Templates count out of max bounds"},
		{"not a user's choice", map[string]string{tplOnce: "ban"}, "", "emulator:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := f.emu.Subscribe(appID, alice, tt.results)
			if got["errCode"] != tt.errCode || !strings.HasPrefix(got["errMsg"], "requestSubscribeMessage:fail "+tt.errMsg) {
				t.Fatalf("Subscribe = %v", got)
			}
			if s := f.emu.Subscriptions(appID, alice); len(s) != 0 {
				t.Fatalf("a refused request changed state: %+v", s)
			}
		})
	}
}

func TestMethodsForTestsPanicOnUnknownIDs(t *testing.T) {
	f := newFixture(t, wechattest.Options{})
	for name, call := range map[string]func(){
		"Accept unknown app":      func() { f.emu.Accept("wx404", alice, tplOnce) },
		"Accept unknown template": func() { f.emu.Accept(appID, alice, "TPL_404") },
		"AddTemplate unknown app": func() { f.emu.AddTemplate("wx404", wechattest.Template{ID: "x"}) },
		"Unsubscribe unknown tpl": func() { f.emu.Unsubscribe(appID, alice, "TPL_404") },
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if r := recover(); r == nil || !strings.Contains(r.(string), "wechattest:") {
					t.Fatalf("want a wechattest panic, got %v", r)
				}
			}()
			call()
		})
	}
}
