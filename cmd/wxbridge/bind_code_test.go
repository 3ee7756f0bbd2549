package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wxbridge/wxbridge/bridge"
	"github.com/wxbridge/wxbridge/rules"
)

// codeOnlyRules is flowRules with openid binds refused for the app.
var codeOnlyRules = strings.Replace(flowRules, "    aes_key: "+flowAESKey+"\n", "    aes_key: "+flowAESKey+"\n    bind: code\n", 1)

// With bind: code, whoever can publish on wxbridge.cmd.bind can no longer
// point a user's messages at another WeChat account by naming an openid:
// such a bind is refused with a reason and changes nothing. A bind by login
// code, which proves the user holds the account, still works; so does an
// import once the operator allows openid binds again.
func TestOpenIDBindRefusedWhenCodeOnly(t *testing.T) {
	if codeOnlyRules == flowRules {
		t.Fatal("the test did not change the rules")
	}
	dir := t.TempDir()
	h := startHarness(t, dir, codeOnlyRules, func(c *serveConfig) { c.NATSListen = "127.0.0.1:0" })
	emu := h.svc.emu
	ctx := context.Background()

	bindByCode := func(user, openid string) {
		t.Helper()
		var reply bridge.BindReply
		h.request("wxbridge.cmd.bind", bridge.BindRequest{App: "main", UserID: user, Code: emu.IssueCode(flowAppID, openid, "")}, &reply)
		if reply.Error != "" || reply.OpenID != openid {
			t.Fatalf("bind %s by code: %+v", user, reply)
		}
	}
	bindByCode("alice", "o-alice")
	bindByCode("bob", "o-bob")

	unchanged := func(when string) {
		t.Helper()
		for user, openid := range map[string]string{"alice": "o-alice", "bob": "o-bob"} {
			if b, ok, err := h.svc.store.Binding(ctx, "main", user); err != nil || !ok || b.OpenID != openid {
				t.Errorf("%s: binding of %s = %+v %v %v, want %s", when, user, b, ok, err, openid)
			}
			if owner, ok, err := h.svc.store.UserByOpenID(ctx, "main", openid); err != nil || !ok || owner != user {
				t.Errorf("%s: %s belongs to %q %v %v, want %s", when, openid, owner, ok, err, user)
			}
		}
		for _, user := range []string{"mallory", "carol"} {
			if b, ok, _ := h.svc.store.Binding(ctx, "main", user); ok {
				t.Errorf("%s: %s got a binding: %+v", when, user, b)
			}
		}
		if owner, ok, _ := h.svc.store.UserByOpenID(ctx, "main", "o-mallory"); ok {
			t.Errorf("%s: o-mallory belongs to %s", when, owner)
		}
	}

	refusals := []struct {
		name string
		req  bridge.BindRequest
	}{
		{"point alice's messages at another account", bridge.BindRequest{App: "main", UserID: "alice", OpenID: "o-mallory"}},
		{"take bob's account for another user", bridge.BindRequest{App: "main", UserID: "mallory", OpenID: "o-bob"}},
		{"bind a new user to a new openid", bridge.BindRequest{App: "main", UserID: "carol", OpenID: "o-carol", UnionID: "u-carol"}},
	}
	for _, r := range refusals {
		var reply bridge.BindReply
		h.request("wxbridge.cmd.bind", r.req, &reply)
		if !strings.Contains(reply.Error, "login code only") || !strings.Contains(reply.Error, "bind: any") || reply.OpenID != "" || reply.MovedFrom != "" {
			t.Errorf("%s: reply %+v, want a refusal that says how to import", r.name, reply)
		}
	}
	unchanged("after refused openid binds")

	// The operator's import uses openid binds: it fails row by row and says
	// what to do.
	csv := filepath.Join(dir, "bindings.csv")
	if err := os.WriteFile(csv, []byte("app,user_id,openid,unionid\nmain,alice,o-mallory,\nmain,carol,o-carol,\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errs bytes.Buffer
	if code := run(ctx, []string{"import", "bindings", csv, "--nats", h.svc.ns.ClientURL()}, &out, &errs); code != 1 ||
		!strings.Contains(out.String(), "imported 0 bindings, 2 failed") || !strings.Contains(errs.String(), "bind: any") {
		t.Fatalf("import into a code-only app: exit %d\n%s\n%s", code, out.String(), errs.String())
	}
	unchanged("after a refused import")

	// A code may still move an account: the person proved they hold it.
	bindByCode("carol", "o-bob")
	if owner, _, _ := h.svc.store.UserByOpenID(ctx, "main", "o-bob"); owner != "carol" {
		t.Fatalf("o-bob after carol's code bind belongs to %q", owner)
	}

	// bind: any (the default) for an import: openid binds work again.
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), []byte(flowRules), 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for h.svc.bridge.Rules().Apps["main"].Bind != rules.BindAny {
		if time.Now().After(deadline) {
			t.Fatal("rules without bind: code were never loaded")
		}
		time.Sleep(20 * time.Millisecond)
	}
	h.bind("dave", "o-dave")
	if b, _, _ := h.svc.store.Binding(ctx, "main", "dave"); b.OpenID != "o-dave" {
		t.Fatalf("openid bind with bind: any: %+v", b)
	}
}
