package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/wxbridge/wxbridge/wechat/wechattest"
)

// The app, template and keywords every scenario sends. The event id
// travels in character_string1, so each send WeChat records maps back to
// its event; the recipient is the openid.
const (
	benchAppID    = "wx00000000000bec00"
	benchSecret   = "bench-secret"
	benchTemplate = "TPL_bench_notice"
	openIDPrefix  = "oBench-"
)

func openIDOf(userID string) string { return openIDPrefix + userID }
func userOf(openID string) string   { return strings.TrimPrefix(openID, openIDPrefix) }

// fakeWeChat is the emulator behind an HTTP server on a loopback port,
// with a recorder in front of the send path that notes when each (event,
// recipient) first reached WeChat.
type fakeWeChat struct {
	emu *wechattest.Emulator
	srv *http.Server
	ln  net.Listener
	url string

	mu       sync.Mutex
	arrivals map[pairKey]arrival
	requests int
}

type arrival struct {
	first time.Time
	last  time.Time
	n     int
}

// pairKey is one (event, recipient).
type pairKey struct{ event, user string }

func startWeChat() (*fakeWeChat, error) {
	emu := wechattest.New(wechattest.Options{AutoUsers: true, AutoSubscribe: true})
	emu.AddApp(benchAppID, benchSecret)
	emu.AddTemplate(benchAppID, wechattest.Template{ID: benchTemplate, Title: "bench notice", Kind: wechattest.OneTime,
		Keywords: map[string]string{"character_string1": "character_string", "thing2": "thing"}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		emu.Close()
		return nil, fmt.Errorf("emulator listener: %w", err)
	}
	w := &fakeWeChat{emu: emu, ln: ln, url: "http://" + ln.Addr().String(), arrivals: map[pairKey]arrival{}}
	w.srv = &http.Server{Handler: w, ReadHeaderTimeout: 5 * time.Second}
	// Serve returns when close closes the server (ErrServerClosed), or if
	// the listener breaks, which the scenario then sees as WeChat not
	// answering.
	go func() { _ = w.srv.Serve(ln) }()
	return w, nil
}

// sendBody is the part of a subscribe/send body the recorder reads.
type sendBody struct {
	ToUser string `json:"touser"`
	Data   struct {
		Event struct {
			Value string `json:"value"`
		} `json:"character_string1"`
	} `json:"data"`
}

func (w *fakeWeChat) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	if r.URL.Path == wechattest.PathSend && r.Method == http.MethodPost {
		now := time.Now()
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err == nil {
			var sb sendBody
			if json.Unmarshal(body, &sb) == nil && sb.Data.Event.Value != "" {
				k := pairKey{sb.Data.Event.Value, userOf(sb.ToUser)}
				w.mu.Lock()
				a := w.arrivals[k]
				if a.n == 0 {
					a.first = now
				}
				a.last = now
				a.n++
				w.arrivals[k] = a
				w.requests++
				w.mu.Unlock()
			}
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	w.emu.ServeHTTP(rw, r)
}

// snapshot returns the arrivals so far and the sends WeChat accepted.
func (w *fakeWeChat) snapshot() (map[pairKey]arrival, []wechattest.Sent, int) {
	w.mu.Lock()
	arr := make(map[pairKey]arrival, len(w.arrivals))
	for k, v := range w.arrivals {
		arr[k] = v
	}
	n := w.requests
	w.mu.Unlock()
	return arr, w.emu.Sends(), n
}

func (w *fakeWeChat) close() {
	_ = w.srv.Close()
	_ = w.emu.Close()
}
