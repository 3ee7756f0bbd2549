package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The operator tools work against a running bridge: import goes through
// the same NATS commands, state through the admin API.
func TestImportAndState(t *testing.T) {
	const token = "state-token"
	h := flow(t, func(c *serveConfig) {
		c.NATSListen = "127.0.0.1:0"
		c.AdminToken = token
	})
	url := h.svc.ns.ClientURL()
	dir := t.TempDir()
	bindings := filepath.Join(dir, "bindings.csv")
	roles := filepath.Join(dir, "roles.csv")
	os.WriteFile(bindings, []byte("app,user_id,openid,unionid\nmain,u1,o1,x1\nmain,u2,o2,\nnope,u3,o3,\n"), 0o600)
	os.WriteFile(roles, []byte("user_id,role,scope,action\nu1,member,team:1,\nu2,member,team:1,grant\nu2,member,team:1,revoke\nu3,member,team:1,sideways\n"), 0o600)

	var out, errs bytes.Buffer
	code := run(context.Background(), []string{"import", "bindings", bindings, "--nats", url}, &out, &errs)
	if code != 1 || !strings.Contains(out.String(), "imported 2 bindings, 1 failed") || !strings.Contains(errs.String(), "bindings.csv:4:") {
		t.Fatalf("import bindings: exit %d\n%s\n%s", code, out.String(), errs.String())
	}
	if b, ok, _ := h.svc.store.Binding(context.Background(), "main", "u1"); !ok || b.OpenID != "o1" || b.UnionID != "x1" {
		t.Fatalf("binding of u1: %+v", b)
	}
	out.Reset()
	errs.Reset()
	code = run(context.Background(), []string{"import", "roles", roles, "--nats", url}, &out, &errs)
	if code != 1 || !strings.Contains(out.String(), "imported 3 roles, 1 failed") {
		t.Fatalf("import roles: exit %d\n%s\n%s", code, out.String(), errs.String())
	}
	members, _ := h.svc.store.RoleMembers(context.Background(), "member", "team:1")
	if len(members) != 1 || members[0].UserID != "u1" {
		t.Fatalf("members after grant, grant, revoke: %+v", members)
	}

	t.Setenv("WXBRIDGE_ADMIN_TOKEN", token)
	admin := "http://" + h.svc.ln.Addr().String()
	out.Reset()
	if code := run(context.Background(), []string{"state", "user", "u1", "--admin", admin}, &out, &errs); code != 0 ||
		!strings.Contains(out.String(), `"openid": "o1"`) {
		t.Fatalf("state user: exit %d: %s %s", code, out.String(), errs.String())
	}
	out.Reset()
	if code := run(context.Background(), []string{"state", "role", "member", "team:1", "--admin", admin}, &out, &errs); code != 0 ||
		!strings.Contains(out.String(), `"user_id": "u1"`) {
		t.Fatalf("state role: exit %d: %s", code, out.String())
	}
	t.Setenv("WXBRIDGE_ADMIN_TOKEN", "wrong")
	errs.Reset()
	if code := run(context.Background(), []string{"state", "user", "u1", "--admin", admin}, &out, &errs); code != 1 || !strings.Contains(errs.String(), "401") {
		t.Fatalf("state with a wrong token: exit %d: %s", code, errs.String())
	}
	if code := run(context.Background(), []string{"state", "nonsense"}, &out, &errs); code != 2 {
		t.Fatalf("bad usage: exit %d", code)
	}
}
