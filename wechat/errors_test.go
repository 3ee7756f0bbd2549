package wechat_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/wxbridge/wxbridge/wechat"
)

var allClasses = []struct {
	name string
	err  error
}{
	{"ErrTokenInvalid", wechat.ErrTokenInvalid},
	{"ErrTokenFetch", wechat.ErrTokenFetch},
	{"ErrTransient", wechat.ErrTransient},
	{"ErrUncertain", wechat.ErrUncertain},
	{"ErrRecipient", wechat.ErrRecipient},
	{"ErrNotSubscribed", wechat.ErrNotSubscribed},
	{"ErrInvalidOpenID", wechat.ErrInvalidOpenID},
	{"ErrNotFollowing", wechat.ErrNotFollowing},
	{"ErrAlreadySent", wechat.ErrAlreadySent},
	{"ErrConfig", wechat.ErrConfig},
	{"ErrData", wechat.ErrData},
	{"ErrCode", wechat.ErrCode},
}

// assertClasses checks that err matches exactly the sentinels in want.
func assertClasses(t *testing.T, err error, want ...error) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want classes %v", want)
	}
	for _, c := range allClasses {
		wanted := false
		for _, w := range want {
			wanted = wanted || w == c.err
		}
		if got := errors.Is(err, c.err); got != wanted {
			t.Errorf("errors.Is(err, %s) = %v, want %v; err: %v", c.name, got, wanted, err)
		}
	}
}

func TestSendErrcodeClasses(t *testing.T) {
	tests := []struct {
		code int
		msg  string
		want []error
	}{
		{-1, "system error", []error{wechat.ErrTransient}},
		{43108, "concurrent send to the same user", []error{wechat.ErrTransient}},
		{45009, "reach max api daily quota limit", []error{wechat.ErrTransient}},
		{45011, "api minute-quota reach limit", []error{wechat.ErrTransient}},
		{43101, "user refuse to accept the msg", []error{wechat.ErrRecipient, wechat.ErrNotSubscribed}},
		{40003, "invalid openid", []error{wechat.ErrRecipient, wechat.ErrInvalidOpenID}},
		{40037, "invalid template_id", []error{wechat.ErrConfig}},
		{41030, "invalid page", []error{wechat.ErrConfig}},
		{43107, "subscribe message capability banned", []error{wechat.ErrConfig}},
		{47003, "argument invalid! data.thing2.value invalid", []error{wechat.ErrConfig}},
		{45168, "hit sensitive words", []error{wechat.ErrData}},
		{40001, "invalid credential", []error{wechat.ErrTokenInvalid}},
		{40014, "invalid access_token", []error{wechat.ErrTokenInvalid}},
		{42001, "access_token expired", []error{wechat.ErrTokenInvalid}},
		{40013, "invalid appid", []error{wechat.ErrConfig}},
		{99999, "something new", nil},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.code), func(t *testing.T) {
			e := newTestEnv(t)
			e.fake.setSend(func(sendCall) any { return errAnswer(tt.code, tt.msg) })
			msgid, err := e.send(t)
			if err == nil || msgid != "" {
				t.Fatalf("send = %q, %v; want an error", msgid, err)
			}
			assertClasses(t, err, tt.want...)
			var api *wechat.APIError
			if !errors.As(err, &api) {
				t.Fatalf("errors.As(*APIError) failed on %v", err)
			}
			if api.Code != tt.code || !strings.HasPrefix(api.Msg, tt.msg) || api.Path != "/cgi-bin/message/subscribe/send" {
				t.Errorf("APIError = %+v", api)
			}
			// The chain says what was being done with which input.
			for _, part := range []string{"app main", "send template TPL-1 to o-user-1", fmt.Sprint(tt.code)} {
				if !strings.Contains(err.Error(), part) {
					t.Errorf("error %q lacks %q", err, part)
				}
			}
		})
	}
}

func TestAPIErrorField(t *testing.T) {
	tests := []struct {
		msg, want string
	}{
		{"argument invalid! data.thing23.value invalid rid: 6933e8f6-48ac74fd", "thing23"},
		{"argument invalid! data.character_string3.value invalid", "character_string3"},
		{"argument invalid! data.time4 invalid", "time4"},
		{"argument invalid!", ""},
	}
	for _, tt := range tests {
		e := &wechat.APIError{Code: 47003, Msg: tt.msg}
		if got := e.Field(); got != tt.want {
			t.Errorf("Field() of %q = %q, want %q", tt.msg, got, tt.want)
		}
	}
}

func TestCode2SessionErrcodeClasses(t *testing.T) {
	tests := []struct {
		code int
		want []error
	}{
		{40029, []error{wechat.ErrCode}},
		{40226, []error{wechat.ErrCode}},
		{40163, []error{wechat.ErrCode}},
		{-1, []error{wechat.ErrTransient}},
		{45011, []error{wechat.ErrTransient}},
		{40125, []error{wechat.ErrConfig}},
		{40013, []error{wechat.ErrConfig}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.code), func(t *testing.T) {
			e := newTestEnv(t)
			e.fake.setOther(func(*http.Request) any { return errAnswer(tt.code, "refused") })
			_, err := e.client.Code2Session(context.Background(), "main", testCode)
			assertClasses(t, err, tt.want...)
			assertNoSecrets(t, "error", err.Error())
		})
	}
}

// hijack takes the connection from a handler: the request has been read,
// and the client will see whatever the test writes before closing.
func hijack(t *testing.T, w http.ResponseWriter, write string) {
	t.Helper()
	conn, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		t.Errorf("hijack: %v", err)
		return
	}
	_, _ = buf.WriteString(write)
	_ = buf.Flush()
	_ = conn.Close()
}

func TestTransportFailureClasses(t *testing.T) {
	type answer func(t *testing.T, w http.ResponseWriter, r *http.Request, cancel context.CancelFunc)
	status := func(code int) answer {
		return func(_ *testing.T, w http.ResponseWriter, _ *http.Request, _ context.CancelFunc) { w.WriteHeader(code) }
	}
	tests := []struct {
		name      string
		answer    answer
		timeout   time.Duration
		want      []error
		wantCause error
	}{
		{name: "HTTP 500", answer: status(500), want: []error{wechat.ErrTransient}},
		{name: "HTTP 503", answer: status(503), want: []error{wechat.ErrTransient}},
		{name: "HTTP 502 from a gateway", answer: status(502), want: []error{wechat.ErrTransient, wechat.ErrUncertain}},
		{name: "HTTP 504 from a gateway", answer: status(504), want: []error{wechat.ErrTransient, wechat.ErrUncertain}},
		{name: "HTTP 429", answer: status(429), want: []error{wechat.ErrTransient}},
		{name: "HTTP 404: wrong base URL", answer: status(404), want: []error{wechat.ErrConfig}},
		{name: "not JSON", answer: func(_ *testing.T, w http.ResponseWriter, _ *http.Request, _ context.CancelFunc) {
			w.Header().Set("Content-Type", "text/html")
			_, _ = w.Write([]byte("<html>busy</html>"))
		}, want: []error{wechat.ErrTransient}},
		{name: "connection dropped after the request", answer: func(t *testing.T, w http.ResponseWriter, _ *http.Request, _ context.CancelFunc) {
			hijack(t, w, "")
		}, want: []error{wechat.ErrTransient, wechat.ErrUncertain}},
		{name: "answer cut short", answer: func(t *testing.T, w http.ResponseWriter, _ *http.Request, _ context.CancelFunc) {
			hijack(t, w, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"errcode\":0,")
		}, want: []error{wechat.ErrTransient, wechat.ErrUncertain}},
		{name: "caller cancelled after the request was sent", answer: func(_ *testing.T, _ http.ResponseWriter, r *http.Request, cancel context.CancelFunc) {
			cancel()
			<-r.Context().Done()
		}, want: []error{wechat.ErrTransient, wechat.ErrUncertain}, wantCause: context.Canceled},
		{name: "timeout after the request was sent", timeout: 300 * time.Millisecond,
			answer: func(_ *testing.T, _ http.ResponseWriter, r *http.Request, _ context.CancelFunc) {
				<-r.Context().Done()
			}, want: []error{wechat.ErrTransient, wechat.ErrUncertain}, wantCause: context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			e := newTestEnv(t, func(c *wechat.Config) {
				if tt.timeout > 0 {
					c.Timeout = tt.timeout
				}
			})
			e.fake.setSend(func(sendCall) any { return nil })
			e.fake.setOther(nil)
			// Route sends through the fault; tokens still come from the fake.
			faulty := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/cgi-bin/message/subscribe/send" {
					_, _ = io.Copy(io.Discard, r.Body) // see apiFake.serve
					tt.answer(t, w, r, cancel)
					return
				}
				e.fake.serve(w, r)
			}))
			defer faulty.Close()
			c, err := wechat.New(wechat.Config{BaseURL: faulty.URL, Now: e.clock.Now, Timeout: tt.timeout})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetApp("main", wechat.App{AppID: testAppID, Secret: testSecret})
			_, err = c.Send(ctx, "main", testMessage)
			assertClasses(t, err, tt.want...)
			if tt.wantCause != nil && !errors.Is(err, tt.wantCause) {
				t.Errorf("err = %v, want it to wrap %v", err, tt.wantCause)
			}
			assertNoSecrets(t, "error", err.Error())
		})
	}
}

// prefilledStore holds a valid token, so a client can call without fetching.
func prefilledStore(clock *apiClock) *testStore {
	s := newTestStore()
	s.m[stableKey] = storedValue{"TOKEN-prefilled", clock.Now().Add(time.Hour)}
	return s
}

func TestNotSentFailuresAreCertain(t *testing.T) {
	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL := closed.URL
	closed.Close()

	dnsFails := &http.Client{Transport: &http.Transport{
		DialContext: func(_ context.Context, _, addr string) (net.Conn, error) {
			return nil, &net.DNSError{Err: "no such host", Name: addr, IsNotFound: true}
		},
	}}
	tests := []struct {
		name    string
		baseURL string
		client  *http.Client
	}{
		{"connection refused", closedURL, nil},
		{"DNS failure", "http://api.weixin.example", dnsFails},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newAPIClock()
			c, err := wechat.New(wechat.Config{BaseURL: tt.baseURL, HTTPClient: tt.client, Tokens: prefilledStore(clock), Now: clock.Now})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetApp("main", wechat.App{AppID: testAppID, Secret: testSecret})
			_, err = c.Send(context.Background(), "main", testMessage)
			assertClasses(t, err, wechat.ErrTransient)
			assertNoSecrets(t, "error", err.Error(), "TOKEN-prefilled")
		})
	}
}

func TestTokenRequestLostIsNotUncertain(t *testing.T) {
	// The token request was written and its answer lost: the send that
	// needed the token certainly did not happen.
	e := newTestEnv(t)
	faulty := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		hijack(t, w, "")
	}))
	defer faulty.Close()
	c, err := wechat.New(wechat.Config{BaseURL: faulty.URL, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetApp("main", wechat.App{AppID: testAppID, Secret: testSecret})
	_, err = c.Send(context.Background(), "main", testMessage)
	assertClasses(t, err, wechat.ErrTokenFetch, wechat.ErrTransient)
}
