package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxbridge/wxbridge/bridge"
	"github.com/wxbridge/wxbridge/wechat/wechattest"
)

// The crash tests run wxbridge as a real child process (this test binary,
// re-executed as `wxbridge serve`) that a failpoint SIGKILLs at a chosen
// point, then restart it and check what its users see: no recipient lost,
// nothing sent twice except a send the crash left in doubt, which the
// result says.

const childEnv = "WXBRIDGE_TEST_CHILD_ARGS"

func TestMain(m *testing.M) {
	if args := os.Getenv(childEnv); args != "" {
		var argv []string
		if err := json.Unmarshal([]byte(args), &argv); err != nil {
			fmt.Fprintln(os.Stderr, "child args:", err)
			os.Exit(2)
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := run(ctx, argv, os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	os.Exit(m.Run())
}

const crashRules = `
apps:
  main:
    appid: wx00000000000000c1
    secret: crash-secret
templates:
  notice:
    app: main
    id: TPL_crash
    keywords: {thing1: thing, character_string2: character_string}
rules:
  - name: at-least-once
    on: notice.posted
    template: notice
    to:
      - user: "{{ .data.user_id }}"
    data:
      thing1: "{{ .data.text }}"
      character_string2: "{{ .data.ref }}"
  - name: at-most-once
    on: money.moved
    template: notice
    delivery: at_most_once
    to:
      - user: "{{ .data.user_id }}"
    data:
      thing1: "{{ .data.text }}"
      character_string2: "{{ .data.ref }}"
`

// crashRig is a WeChat emulator in this process and a wxbridge child
// process that can die and come back.
type crashRig struct {
	t        *testing.T
	dir      string
	emu      *wechattest.Emulator
	api      string
	natsAddr string
	httpAddr string
	child    *exec.Cmd
	exited   chan error
	nc       *nats.Conn
	// stderr, if set, also receives what the child logs.
	stderr io.Writer
	// store is the child's --store ("" for the default).
	store string
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func newCrashRig(t *testing.T) *crashRig {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), []byte(crashRules), 0o600); err != nil {
		t.Fatal(err)
	}
	emu := wechattest.New(wechattest.Options{})
	emu.AddApp("wx00000000000000c1", "crash-secret")
	emu.AddTemplate("wx00000000000000c1", wechattest.Template{ID: "TPL_crash", Title: "crash",
		Keywords: map[string]string{"thing1": "thing", "character_string2": "character_string"}})
	srv := httptest.NewServer(emu)
	t.Cleanup(func() { srv.Close(); emu.Close() })
	return &crashRig{t: t, dir: dir, emu: emu, api: srv.URL, natsAddr: freeAddr(t), httpAddr: freeAddr(t)}
}

// start runs the child with the given failpoints armed and waits until it
// serves.
func (r *crashRig) start(failpoints string) {
	r.t.Helper()
	args, _ := json.Marshal([]string{"serve", "--rules", filepath.Join(r.dir, "rules.yaml"), "--data", filepath.Join(r.dir, "data"),
		"--listen", r.httpAddr, "--nats-listen", r.natsAddr, "--wechat-api", r.api,
		"--ack-wait", "2s", "--shutdown-grace", "2s", "--store", cmp.Or(r.store, "bbolt"), "--lease-ttl", "2s"})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(args), "WXBRIDGE_FAILPOINTS="+failpoints, "WXBRIDGE_LOG_LEVEL=warn")
	cmd.Stdout, cmd.Stderr = io.Discard, testWriter{r.t}
	if r.stderr != nil {
		cmd.Stderr = io.MultiWriter(testWriter{r.t}, r.stderr)
	}
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.child, r.exited = cmd, make(chan error, 1)
	go func() { r.exited <- cmd.Wait() }()
	r.t.Cleanup(func() { _ = cmd.Process.Kill() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		nc, err := nats.Connect("nats://"+r.natsAddr, nats.Timeout(time.Second))
		if err == nil {
			// Serving means the bridge's command subscriptions answer.
			if _, err = nc.Request("wxbridge.cmd.roles", []byte(`{}`), time.Second); err == nil {
				r.nc = nc
				return
			}
			nc.Close()
		}
		select {
		case err := <-r.exited:
			r.t.Fatalf("child exited while starting: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("child not serving after 30s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitKilled waits for the child to die of SIGKILL.
func (r *crashRig) waitKilled() {
	r.t.Helper()
	select {
	case err := <-r.exited:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			r.t.Fatalf("child ended with %v, want killed by SIGKILL at the failpoint", err)
		}
	case <-time.After(30 * time.Second):
		r.t.Fatal("the failpoint never killed the child")
	}
	r.nc.Close()
}

func (r *crashRig) stop() {
	r.t.Helper()
	r.nc.Close()
	_ = r.child.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-r.exited:
		if err != nil {
			r.t.Errorf("child stopped with %v, want exit 0", err)
		}
	case <-time.After(20 * time.Second):
		r.t.Error("child did not stop on SIGTERM")
	}
}

func (r *crashRig) request(subject string, body any) {
	r.t.Helper()
	data, _ := json.Marshal(body)
	msg, err := r.nc.Request(subject, data, waitLimit)
	if err != nil {
		r.t.Fatalf("request %s: %v", subject, err)
	}
	if strings.Contains(string(msg.Data), `"error"`) {
		r.t.Fatalf("%s: %s", subject, msg.Data)
	}
}

func (r *crashRig) publish(typ, id string, data any) {
	r.t.Helper()
	js, _ := jetstream.New(r.nc)
	m := nats.NewMsg("events." + typ)
	m.Data, _ = json.Marshal(data)
	m.Header.Set(nats.MsgIdHdr, id)
	if _, err := js.PublishMsg(context.Background(), m); err != nil {
		r.t.Fatalf("publish: %v", err)
	}
}

// users binds n users, each with the given credits in the ledger and at
// WeChat.
func (r *crashRig) users(n, credits int) {
	r.t.Helper()
	for i := 0; i < n; i++ {
		user, openid := fmt.Sprintf("u%d", i), fmt.Sprintf("o%d", i)
		r.request("wxbridge.cmd.bind", bridge.BindRequest{App: "main", UserID: user, OpenID: openid})
		for c := 0; c < credits; c++ {
			r.request("wxbridge.cmd.subscriptions", bridge.SubscriptionsRequest{App: "main", UserID: user, Results: map[string]string{"TPL_crash": "accept"}})
			r.emu.Accept("wx00000000000000c1", openid, "TPL_crash")
		}
	}
}

// outcomes waits for a final outcome of every event id.
func (r *crashRig) outcomes(ids []string) map[string]bridge.Result {
	r.t.Helper()
	out := map[string]bridge.Result{}
	var all []bridge.Result
	readStream(r.t, r.nc, "wxbridge.results.>", func(int) bool {
		for _, res := range all {
			if res.Reason != "duplicate" {
				out[res.EventID] = res
			}
		}
		for _, id := range ids {
			if _, ok := out[id]; !ok {
				return false
			}
		}
		return true
	}, func(m jetstream.Msg) {
		var res bridge.Result
		_ = json.Unmarshal(m.Data(), &res)
		all = append(all, res)
	}, func() {})
	return out
}

func (r *crashRig) sendsPerUser() map[string]int {
	out := map[string]int{}
	for _, s := range r.emu.Sends() {
		out[s.ToUser]++
	}
	return out
}

func TestCrash(t *testing.T) {
	cases := []struct {
		name      string
		failpoint string // killed at the 3rd time it is reached
		event     string
		credits   int // each user's one-time credits
		// what the 3rd user (the one being handled when the process died)
		// ends with
		wantSends   int
		wantStatus  string
		wantInDoubt bool
	}{
		// Killed before the WeChat call: the record is pending, so after the
		// restart the send is in doubt and made (it had not happened).
		{"after reserve, at least once", "after-reserve=kill@3", "notice.posted", 1, 1, "sent", true},
		// Killed after WeChat took the message but before the record: the one
		// case a duplicate is possible; the result says in_doubt. A user with
		// a second credit does get the message twice...
		{"after send, at least once", "after-send=kill@3", "notice.posted", 2, 2, "sent", true},
		// ...while with one credit WeChat refuses the resend (43101): one
		// message, and a result that admits the doubt.
		{"after send, at least once, one credit", "after-send=kill@3", "notice.posted", 1, 1, "failed", true},
		// The same crash under at_most_once: not sent again, reported.
		{"after send, at most once", "after-send=kill@3", "money.moved", 2, 1, "failed", true},
		// Killed after the outcome was recorded, before the ack: the
		// redelivery finds it final and sends nothing.
		{"after complete", "after-complete=kill@3", "notice.posted", 1, 1, "sent", false},
		// Killed after the event was marked done, before the ack.
		{"before ack", "before-ack=kill@3", "notice.posted", 1, 1, "sent", false},
	}
	for _, tc := range cases {
		for _, store := range []string{"bbolt", "nats"} {
			t.Run(store+"/"+tc.name, func(t *testing.T) {
				r := newCrashRig(t)
				r.store = store
				r.start("")
				const n = 6
				r.users(n, tc.credits)
				r.stop()

				// One event at a time, so that the 3rd time the failpoint is
				// reached is while handling the 3rd user's event.
				r.start(tc.failpoint)
				var ids []string
				event := func(i int) {
					id := fmt.Sprintf("e%d", i)
					ids = append(ids, id)
					r.publish(tc.event, id, map[string]any{"user_id": fmt.Sprintf("u%d", i), "text": "t", "ref": id})
				}
				for i := 0; i < 2; i++ {
					event(i)
					r.outcomes(ids)
				}
				event(2)
				r.waitKilled()

				r.start("")
				for i := 3; i < n; i++ {
					event(i)
				}
				got := r.outcomes(ids)
				sends := r.sendsPerUser()
				for i := 0; i < n; i++ {
					res, openid := got[ids[i]], fmt.Sprintf("o%d", i)
					if i == 2 {
						if sends[openid] != tc.wantSends || res.Status != tc.wantStatus || res.InDoubt != tc.wantInDoubt {
							t.Errorf("crashed recipient: %d sends, result %s/%s in_doubt=%v; want %d sends, %s, in_doubt=%v",
								sends[openid], res.Status, res.Reason, res.InDoubt, tc.wantSends, tc.wantStatus, tc.wantInDoubt)
						}
						continue
					}
					if sends[openid] != 1 || res.Status != "sent" || res.InDoubt {
						t.Errorf("user %d: %d sends, result %+v; want exactly one send", i, sends[openid], res)
					}
				}
				r.stop()
			})
		}
	}
}

// A crash while sends wait their turn (behind another send to the same
// user) leaves only the send whose request went out in doubt: everything
// still queued is tried afresh after the restart, under either delivery.
func TestCrashWithQueuedSends(t *testing.T) {
	for _, tc := range []struct {
		name, event string
		// the in-flight send after the restart: status
		wantStatus string
	}{
		{"at most once", "money.moved", "failed"},
		{"at least once", "notice.posted", "sent"},
	} {
		for _, store := range []string{"bbolt", "nats"} {
			t.Run(store+"/"+tc.name, func(t *testing.T) {
				r := newCrashRig(t)
				r.store = store
				r.start("")
				r.users(1, 40) // one user: every send waits for the one before
				r.stop()
				// Slow enough that the queue is long when the 3rd send is killed.
				r.emu.SetFaults(wechattest.Faults{Latency: 100 * time.Millisecond, Paths: []string{wechattest.PathSend}})
				r.start("after-send=kill@3")
				const n = 30
				var ids []string
				for i := 0; i < n; i++ {
					id := fmt.Sprintf("q%d", i)
					ids = append(ids, id)
					r.publish(tc.event, id, map[string]any{"user_id": "u0", "text": "t", "ref": id})
				}
				r.waitKilled()
				r.emu.SetFaults(wechattest.Faults{})
				r.start("")
				got := r.outcomes(ids)
				inDoubt, sent := 0, 0
				for _, id := range ids {
					res := got[id]
					switch {
					case res.InDoubt:
						inDoubt++
						if res.Status != tc.wantStatus {
							t.Errorf("%s: the send in flight at the crash ended %s/%s, want %s", id, res.Status, res.Reason, tc.wantStatus)
						}
					case res.Status == "sent":
						sent++
					default:
						t.Errorf("%s: %s/%s; a send that was only queued must be tried afresh", id, res.Status, res.Reason)
					}
				}
				if inDoubt != 1 || sent != n-1 {
					t.Errorf("%d in doubt and %d sent cleanly; want 1 in doubt (the request that went out) and %d sent", inDoubt, sent, n-1)
				}
				// WeChat saw each event once, the in-doubt one included (its
				// request did go out before the crash), plus its resend under
				// at_least_once.
				want := n
				if tc.wantStatus == "sent" {
					want++
				}
				if got := r.sendsPerUser()["o0"]; got != want {
					t.Errorf("WeChat got %d sends, want %d", got, want)
				}
				r.stop()
			})
		}
	}
}
