package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxbridge/wxbridge/bridge"
	"github.com/wxbridge/wxbridge/internal/embednats"
	"github.com/wxbridge/wxbridge/storage/natskv"
	"github.com/wxbridge/wxbridge/wechat/wechattest"
)

const clusterRules = `
apps:
  main:
    appid: wx00000000000000c3
    secret: cluster-secret
templates:
  once:
    app: main
    id: TPL_once
    kind: one_time
    keywords: {thing1: thing, character_string2: character_string}
  always:
    app: main
    id: TPL_always
    kind: long_term
    keywords: {thing1: thing, character_string2: character_string}
rules:
  - name: notice
    on: notice.posted
    template: once
    to: [{user: "{{ .data.user }}"}]
    data: {thing1: "{{ .data.text }}", character_string2: "{{ .data.ref }}"}
  - name: digest
    on: digest.ready
    template: always
    to: [{user: "{{ .data.user }}"}]
    data: {thing1: "{{ .data.text }}", character_string2: "{{ .data.ref }}"}
  - name: team
    on: team.notice
    template: always
    to: [{role: member, scope: "team:{{ .data.team }}"}]
    data: {thing1: "{{ .data.text }}", character_string2: "{{ .data.ref }}"}
`

// readmeAuthorization returns the nats-server authorization block the
// README documents (under "NATS permissions"), so that the cluster runs
// with exactly the permissions operators are told to give.
func readmeAuthorization(t *testing.T) string {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)### NATS permissions.*?```\n(authorization \\{.*?\n\\})\n```").FindSubmatch(readme)
	if m == nil {
		t.Fatal("README.md has no authorization block under NATS permissions")
	}
	return string(m[1])
}

// Three bridges, the real binary, on a three-node NATS cluster with the
// README's permissions, sharing one durable consumer and the state in an
// R3 KV bucket. During a run of 5,000 events to 5,900 recipients one bridge is
// SIGKILLed and restarted, and the NATS node leading the state's stream is
// stopped and restarted. Afterwards no recipient is lost, every recipient
// has exactly one outcome result, every duplicate send says in_doubt, and
// one-time credits are conserved.
func TestCluster(t *testing.T) {
	dir := t.TempDir()
	// The README's users authenticate with passwords from the environment.
	passwords := map[string]string{}
	for _, u := range []string{"PUBLISHER", "MINIPROGRAM", "IDENTITY", "WATCHER", "WXBRIDGE"} {
		passwords[u] = strings.ToLower(u) + "-pw-" + fmt.Sprint(time.Now().UnixNano()%1000)
		t.Setenv(u+"_PASSWORD", passwords[u])
	}
	conf := filepath.Join(dir, "auth.conf")
	if err := os.WriteFile(conf, []byte(readmeAuthorization(t)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	auth, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("the README's authorization block does not parse: %v", err)
	}
	var violations atomic.Int64
	cluster, err := embednats.StartCluster(embednats.ClusterOptions{N: 3, Dir: filepath.Join(dir, "nats"),
		Logger: permissionLogger(t, &violations),
		Configure: func(_ int, o *server.Options) {
			o.Users, o.Nkeys = auth.Users, auth.Nkeys
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Shutdown)
	as := func(user string) *nats.Conn {
		t.Helper()
		nc, err := nats.Connect(cluster.URL(), nats.UserInfo(strings.ToLower(user), passwords[user]),
			nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
		if err != nil {
			t.Fatalf("connect as %s: %v", user, err)
		}
		t.Cleanup(nc.Close)
		return nc
	}

	const appid = "wx00000000000000c3"
	emu := wechattest.New(wechattest.Options{})
	emu.AddApp(appid, "cluster-secret")
	keywords := map[string]string{"thing1": "thing", "character_string2": "character_string"}
	emu.AddTemplate(appid, wechattest.Template{ID: "TPL_once", Title: "once", Kind: wechattest.OneTime, Keywords: keywords})
	emu.AddTemplate(appid, wechattest.Template{ID: "TPL_always", Title: "always", Kind: wechattest.LongTerm, Keywords: keywords})
	srv := httptest.NewServer(emu)
	t.Cleanup(func() { srv.Close(); emu.Close() })
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), []byte(clusterRules), 0o600); err != nil {
		t.Fatal(err)
	}

	bridges := make([]*clusterBridge, 3)
	for i := range bridges {
		bridges[i] = &clusterBridge{t: t, i: i, dir: dir, nats: cluster.URL(), api: srv.URL, password: passwords["WXBRIDGE"], listen: freeAddr(t)}
		bridges[i].start()
	}
	t.Cleanup(func() {
		for _, b := range bridges {
			b.kill()
		}
	})

	// Users, roles and credits, as the identity system and the mini
	// program's backend would set them up.
	const users, teams, perTeam, notices, digests, teamEvents = 200, 20, 10, 1000, 3900, 100
	identity, miniprogram := as("IDENTITY"), as("MINIPROGRAM")
	granted := map[string]int{}
	for i := 0; i < notices; i++ {
		granted[fmt.Sprintf("u%d", i%users)]++
	}
	parallel(t, users, func(i int) error {
		user, openid := fmt.Sprintf("u%d", i), fmt.Sprintf("o%d", i)
		emu.AddUser(appid, openid)
		if err := clusterRequest(identity, "wxbridge.cmd.bind", bridge.BindRequest{App: "main", UserID: user, OpenID: openid}); err != nil {
			return err
		}
		if i < teams*perTeam {
			req := bridge.RolesRequest{UserID: user}
			req.Grant = append(req.Grant, roleOf(fmt.Sprintf("team:%d", i/perTeam)))
			if err := clusterRequest(identity, "wxbridge.cmd.roles", req); err != nil {
				return err
			}
		}
		emu.Accept(appid, openid, "TPL_always")
		if err := clusterRequest(miniprogram, "wxbridge.cmd.subscriptions", bridge.SubscriptionsRequest{App: "main", UserID: user,
			Results: map[string]string{"TPL_always": "accept"}}); err != nil {
			return err
		}
		for c := 0; c < granted[user]; c++ {
			emu.Accept(appid, openid, "TPL_once")
			// Each accept at its own time: none pairs with another.
			if err := clusterRequest(miniprogram, "wxbridge.cmd.subscriptions", bridge.SubscriptionsRequest{App: "main", UserID: user,
				Results: map[string]string{"TPL_once": "accept"}, At: time.Now().Add(time.Duration(c) * time.Hour)}); err != nil {
				return err
			}
		}
		return nil
	})

	// The events, published as fast as the cluster takes them.
	publisher := as("PUBLISHER")
	js, _ := jetstream.New(publisher)
	type want struct{ event, user string }
	expected := map[want]bool{}
	var mu sync.Mutex
	events := notices + digests + teamEvents
	pubDone := make(chan error, 1)
	go func() {
		for i := 0; i < events; i++ {
			id := fmt.Sprintf("c%d", i)
			var subject, data string
			switch {
			case i < notices:
				subject, data = "events.notice.posted", fmt.Sprintf(`{"user":"u%d","text":"n","ref":"%s"}`, i%users, id)
			case i < notices+digests:
				subject, data = "events.digest.ready", fmt.Sprintf(`{"user":"u%d","text":"d","ref":"%s"}`, i%users, id)
			default:
				subject, data = "events.team.notice", fmt.Sprintf(`{"team":%d,"text":"t","ref":"%s"}`, i%teams, id)
			}
			m := nats.NewMsg(subject)
			m.Header.Set(nats.MsgIdHdr, id)
			m.Data = []byte(data)
			// A node going away makes a publish time out now and then: the
			// same id again is dropped by the stream if the first got in.
			var err error
			for try := 0; try < 30; try++ {
				if _, err = js.PublishMsg(context.Background(), m); err == nil {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			if err != nil {
				pubDone <- fmt.Errorf("publish %s: %w", id, err)
				return
			}
		}
		pubDone <- nil
	}()
	for i := 0; i < events; i++ {
		id := fmt.Sprintf("c%d", i)
		mu.Lock()
		if i < notices+digests {
			expected[want{id, fmt.Sprintf("u%d", i%users)}] = true
		} else {
			for m := 0; m < perTeam; m++ {
				expected[want{id, fmt.Sprintf("u%d", (i%teams)*perTeam+m)}] = true
			}
		}
		mu.Unlock()
	}

	// Watch the outcomes; take a bridge and the state's leading NATS node
	// down while they come in.
	watcher := as("WATCHER")
	outcomes := map[want][]bridge.Result{}
	var watched atomic.Int64
	wjs, _ := jetstream.New(watcher)
	cons, err := wjs.OrderedConsumer(context.Background(), "WXBRIDGE", jetstream.OrderedConsumerConfig{FilterSubjects: []string{"wxbridge.results.>"}})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		var r bridge.Result
		if err := json.Unmarshal(m.Data(), &r); err != nil || r.Status == "delivered" || r.Status == "undelivered" {
			return
		}
		mu.Lock()
		k := want{r.EventID, r.UserID}
		outcomes[k] = append(outcomes[k], r)
		mu.Unlock()
		watched.Add(1)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Stop()

	total := len(expected)
	waitWatched := func(n int) {
		t.Helper()
		deadline := time.Now().Add(4 * time.Minute)
		for watched.Load() < int64(n) {
			if time.Now().After(deadline) {
				diag := as("WXBRIDGE")
				djs, _ := jetstream.New(diag)
				for _, c := range [][2]string{{"EVENTS", "wxbridge"}, {"KV_wxbridge", "wxbridge_outbox"}, {"KV_wxbridge", "wxbridge_due"}} {
					if cons, err := djs.Consumer(context.Background(), c[0], c[1]); err != nil {
						t.Logf("consumer %s/%s: %v", c[0], c[1], err)
					} else {
						i := cons.CachedInfo()
						t.Logf("consumer %s/%s: pending %d, ack pending %d, waiting %d, redelivered %d, delivered %d, ack floor %d, leader %s",
							c[0], c[1], i.NumPending, i.NumAckPending, i.NumWaiting, i.NumRedelivered, i.Delivered.Stream, i.AckFloor.Stream, i.Cluster.Leader)
					}
				}
				t.Logf("WeChat got %d sends", len(emu.Sends()))
				t.Fatalf("%d of %d outcomes after 4 minutes", watched.Load(), total)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitWatched(total / 4)
	t.Logf("bridge 0 SIGKILLed at %d outcomes", watched.Load())
	bridges[0].kill()
	bridges[0].start()
	waitWatched(total / 2)
	leader := cluster.LeaderOf("KV_wxbridge")
	if leader < 0 {
		t.Fatal("no leader of the state's stream")
	}
	t.Logf("NATS node %d (leading KV_wxbridge) stopped at %d outcomes", leader, watched.Load())
	cluster.Stop(leader)
	time.Sleep(2 * time.Second)
	if err := cluster.Start(leader); err != nil {
		t.Fatal(err)
	}
	if err := <-pubDone; err != nil {
		t.Fatal(err)
	}
	waitWatched(total)
	time.Sleep(time.Second) // a late duplicate result would show now

	mu.Lock()
	defer mu.Unlock()
	sends := map[want]int{}
	for _, s := range emu.Sends() {
		sends[want{s.Data["character_string2"], "u" + strings.TrimPrefix(s.ToUser, "o")}]++
	}
	lost, inDoubt, duplicates := 0, 0, 0
	spent := map[string]int{}
	for k := range expected {
		rs := outcomes[k]
		switch {
		case len(rs) == 0:
			lost++
			t.Errorf("%v: no outcome", k)
			continue
		case len(rs) > 1:
			t.Errorf("%v: %d outcome results, want one: %+v", k, len(rs), rs)
		}
		r := rs[0]
		if r.InDoubt {
			inDoubt++
		}
		if r.Status != "sent" && !(r.Status == "failed" && r.InDoubt) {
			t.Errorf("%v: %s/%s %s", k, r.Status, r.Reason, r.ErrMsg)
		}
		if n := sends[k]; n > 1 {
			duplicates++
			if !r.InDoubt {
				t.Errorf("%v: WeChat got %d sends, and the result does not say in_doubt", k, n)
			}
		}
		if r.Status == "sent" && r.TemplateID == "TPL_once" {
			spent[k.user]++
		}
	}
	// Credits: what was granted is what was spent plus what is left.
	state, err := natskv.Open(context.Background(), as("WXBRIDGE"), natskv.Options{Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer state.Close()
	for i := 0; i < users; i++ {
		user := fmt.Sprintf("u%d", i)
		sub, _, err := state.Subscription(context.Background(), "main", fmt.Sprintf("o%d", i), "TPL_once")
		if err != nil {
			t.Fatal(err)
		}
		if spent[user]+sub.Credits != granted[user] {
			t.Errorf("%s: %d credits granted, %d spent, %d left", user, granted[user], spent[user], sub.Credits)
		}
	}
	// An absence that decides an outcome is read again from the stream's
	// leader: the bridge's user may do that too, whether or not the run
	// above needed it (it does when a replica lagged).
	if _, found, err := state.Binding(context.Background(), "main", "u-nobody"); err != nil || found {
		t.Errorf("a binding nobody made, confirmed by the leader: %v, %v", found, err)
	}
	if n := violations.Load(); n > 0 {
		t.Errorf("%d permission violations with the README's permissions", n)
	}
	t.Logf("%d events, %d recipients: %d lost, %d in doubt, %d sent twice (all in doubt); WeChat answered 43108 (two bridges sending to one user at once) %d times",
		events, total, lost, inDoubt, duplicates, emu.Errors()[43108])
}

func roleOf(scope string) (r struct {
	Role  string `json:"role"`
	Scope string `json:"scope"`
}) {
	r.Role, r.Scope = "member", scope
	return r
}

// clusterRequest sends a command and fails on an error reply. The bridges
// may be busy or between leaders: it tries again for a while.
func clusterRequest(nc *nats.Conn, subject string, body any) error {
	data, _ := json.Marshal(body)
	var last error
	for attempt := 0; attempt < 20; attempt++ {
		msg, err := nc.Request(subject, data, 10*time.Second)
		if err != nil {
			last = err
			time.Sleep(200 * time.Millisecond)
			continue
		}
		var reply struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(msg.Data, &reply)
		if reply.Error != "" {
			return fmt.Errorf("%s: %s", subject, reply.Error)
		}
		return nil
	}
	return fmt.Errorf("%s: %w", subject, last)
}

// parallel runs fn for 0..n-1, 16 at a time, and fails on the first error.
func parallel(t *testing.T, n int, fn func(i int) error) {
	t.Helper()
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for i := 0; i < n; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := fn(i); err != nil {
				once.Do(func() { first = err })
			}
		}()
	}
	wg.Wait()
	if first != nil {
		t.Fatal(first)
	}
}

// clusterBridge is one wxbridge process of the cluster test.
type clusterBridge struct {
	t                                *testing.T
	i                                int
	dir, nats, api, password, listen string
	cmd                              *exec.Cmd
	exited                           chan error
}

func (b *clusterBridge) start() {
	b.t.Helper()
	args, _ := json.Marshal([]string{"serve", "--rules", filepath.Join(b.dir, "rules.yaml"),
		"--data", filepath.Join(b.dir, fmt.Sprintf("bridge%d", b.i)), "--listen", b.listen, "--wechat-api", b.api,
		"--nats", b.nats, "--nats-user", "wxbridge", "--store", "nats", "--replicas", "3", "--lease-ttl", "2s",
		"--ack-wait", "10s", "--shutdown-grace", "2s", "--max-in-flight", "32"})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	// With an admin token, the console's read model follows the output
	// stream too: its reads must fit the README's permissions as well.
	cmd.Env = append(os.Environ(), childEnv+"="+string(args), "WXBRIDGE_NATS_PASSWORD="+b.password, "WXBRIDGE_LOG_LEVEL=warn",
		"WXBRIDGE_ADMIN_TOKEN=cluster-admin-token")
	cmd.Stdout, cmd.Stderr = nil, testWriter{b.t}
	if err := cmd.Start(); err != nil {
		b.t.Fatal(err)
	}
	b.cmd, b.exited = cmd, make(chan error, 1)
	go func() { b.exited <- cmd.Wait() }()
	if err := waitReady("http://"+b.listen+"/readyz", b.exited, time.Minute); err != nil {
		b.t.Fatalf("bridge %d: %v", b.i, err)
	}
}

func (b *clusterBridge) kill() {
	if b.cmd == nil || b.cmd.ProcessState != nil {
		return
	}
	_ = b.cmd.Process.Kill()
	<-b.exited
}

// waitReady polls url until it answers 200, the process exits or wait ends.
func waitReady(url string, exited <-chan error, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("exited while starting: %v", err)
		default:
		}
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready after %s", url, wait)
}

// permissionLogger counts the permission violations the NATS servers log,
// and passes warnings and errors to the test log.
func permissionLogger(t *testing.T, violations *atomic.Int64) *slog.Logger {
	return slog.New(&countingHandler{Handler: slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}), n: violations})
}

type countingHandler struct {
	slog.Handler
	n *atomic.Int64
}

func (h *countingHandler) Handle(ctx context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "Violation") {
		h.n.Add(1)
	}
	return h.Handler.Handle(ctx, r)
}

func (h *countingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &countingHandler{Handler: h.Handler.WithAttrs(as), n: h.n}
}

func (h *countingHandler) WithGroup(g string) slog.Handler {
	return &countingHandler{Handler: h.Handler.WithGroup(g), n: h.n}
}
