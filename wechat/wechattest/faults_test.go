package wechattest_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/wxbridge/wxbridge/wechat/wechattest"
)

func TestFaultsThatRefuseWithoutActing(t *testing.T) {
	tests := []struct {
		name   string
		faults wechattest.Faults
		check  func(t *testing.T, a answer, err error)
	}{
		{"system error", wechattest.Faults{SystemErrorRate: 1}, func(t *testing.T, a answer, err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
			wantErr(t, a, -1, "system error")
		}},
		{"HTTP 500", wechattest.Faults{HTTP500Rate: 1}, func(t *testing.T, a answer, err error) {
			t.Helper()
			if err != nil || a.status != http.StatusInternalServerError {
				t.Fatalf("want HTTP 500, got %v %d %s", err, a.status, a.body)
			}
		}},
		{"dropped connection", wechattest.Faults{DropRate: 1}, func(t *testing.T, a answer, err error) {
			t.Helper()
			if err == nil {
				t.Fatalf("want a transport error, got HTTP %d %s", a.status, a.body)
			}
		}},
		{"quota exhausted", wechattest.Faults{QuotaExhausted: true}, func(t *testing.T, a answer, err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
			wantErr(t, a, 45009, "reach max api daily quota limit")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, wechattest.Options{})
			f.emu.Accept(appID, alice, tplOnce)
			tok := f.token()
			f.emu.SetFaults(tt.faults)
			a, err := f.try(context.Background(), http.MethodPost, wechattest.PathSend, url.Values{"access_token": {tok}}, msg(alice, tplOnce, goodOnce))
			tt.check(t, a, err)
			if n := len(f.emu.Sends()); n != 0 {
				t.Fatalf("a refused send was recorded")
			}
			if c := f.emu.Credits(appID, alice, tplOnce); c != 1 {
				t.Fatalf("a refused send spent the credit: %d left", c)
			}
			if n := f.emu.Calls()[wechattest.PathSend]; n != 1 {
				t.Fatalf("Calls()[send] = %d, want the failed call counted", n)
			}
			// Turning the faults off restores normal service.
			f.emu.SetFaults(wechattest.Faults{})
			if a := f.send(tok, msg(alice, tplOnce, goodOnce)); a.errcode != 0 {
				t.Fatalf("after SetFaults(Faults{}): %s", a.body)
			}
		})
	}
}

func TestLostReplyCarriesTheSendOut(t *testing.T) {
	f := newFixture(t, wechattest.Options{})
	f.emu.Accept(appID, alice, tplOnce)
	tok := f.token()
	f.emu.SetFaults(wechattest.Faults{LostReplyRate: 1})
	if _, err := f.try(context.Background(), http.MethodPost, wechattest.PathSend, url.Values{"access_token": {tok}}, msg(alice, tplOnce, goodOnce)); err == nil {
		t.Fatal("want a transport error")
	}
	if n := len(f.emu.Sends()); n != 1 || f.emu.Credits(appID, alice, tplOnce) != 0 {
		t.Fatalf("the send whose reply was lost must have happened: %d sends, %d credits", n, f.emu.Credits(appID, alice, tplOnce))
	}
}

func TestTimeoutHoldsTheRequestThenCarriesItOut(t *testing.T) {
	f := newFixture(t, wechattest.Options{})
	f.emu.Accept(appID, alice, tplOnce)
	tok := f.token()

	// A client that waits long enough gets the answer.
	f.emu.SetFaults(wechattest.Faults{TimeoutRate: 1, HangFor: time.Millisecond})
	if a := f.send(tok, msg(alice, tplOnce, goodOnce)); a.errcode != 0 {
		t.Fatalf("after the hang: %s", a.body)
	}

	// A client that gives up gets nothing, yet the send happens. It gives
	// up once the emulator holds the request: a deadline on the client
	// alone could expire before the request arrived at all (under load),
	// and then there would be nothing to carry out.
	f.emu.Accept(appID, alice, tplOnce)
	f.emu.SetFaults(wechattest.Faults{TimeoutRate: 1, HangFor: time.Hour})
	arrived := make(chan struct{})
	var once sync.Once
	held := &fixture{t: t, emu: f.emu, srv: newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The body is read here, so giving up cannot cut it short.
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		once.Do(func() { close(arrived) })
		f.emu.ServeHTTP(w, r)
	}))}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-arrived
		cancel()
	}()
	_, err := held.try(ctx, http.MethodPost, wechattest.PathSend, url.Values{"access_token": {tok}}, msg(alice, tplOnce, goodOnce))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("want the client to give up, got %v", err)
	}
	held.srv.Close() // waits for the held handler to finish
	if n := len(f.emu.Sends()); n != 2 {
		t.Fatalf("%d sends recorded, want the one given up on too", n)
	}
}

func TestLatencyDelaysAnswers(t *testing.T) {
	f := newFixture(t, wechattest.Options{AutoSubscribe: true})
	tok := f.token()
	f.emu.SetFaults(wechattest.Faults{Latency: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := f.try(ctx, http.MethodPost, wechattest.PathSend, url.Values{"access_token": {tok}}, msg(alice, tplOnce, goodOnce)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want the client to give up waiting, got %v", err)
	}
	// Latency applies to every path unless Paths says otherwise.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	if _, err := f.try(ctx2, http.MethodPost, wechattest.PathStableToken, nil, map[string]string{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("token call under latency: %v", err)
	}
}

func TestFaultsLimitedToPaths(t *testing.T) {
	f := newFixture(t, wechattest.Options{AutoSubscribe: true})
	f.emu.SetFaults(wechattest.Faults{SystemErrorRate: 1, Paths: []string{wechattest.PathSend}})
	tok := f.token() // the token path is not faulted
	wantErr(t, f.send(tok, msg(alice, tplOnce, goodOnce)), -1, "system error")
	if got := f.emu.Faults(); !reflect.DeepEqual(got.Paths, []string{wechattest.PathSend}) || got.SystemErrorRate != 1 {
		t.Fatalf("Faults() = %+v", got)
	}
}

func TestInvalidateTokenEvery(t *testing.T) {
	f := newFixture(t, wechattest.Options{AutoSubscribe: true})
	f.emu.SetFaults(wechattest.Faults{InvalidateTokenEvery: 2})
	tok := f.token()
	for i := 0; i < 2; i++ {
		if a := f.send(tok, msg(alice, tplOnce, goodOnce)); a.errcode != 0 {
			t.Fatalf("send %d: %s", i, a.body)
		}
	}
	wantErr(t, f.send(tok, msg(alice, tplOnce, goodOnce)), 40001, "invalid credential")
	next := f.token()
	if next == tok {
		t.Fatal("stable_token returned the invalidated token")
	}
	if a := f.send(next, msg(alice, tplOnce, goodOnce)); a.errcode != 0 {
		t.Fatalf("send with the new token: %s", a.body)
	}
}

func TestFaultDrawsAreRepeatableWithASeed(t *testing.T) {
	outcomes := func() []int {
		f := newFixture(t, wechattest.Options{})
		f.emu.SetFaults(wechattest.Faults{SystemErrorRate: 0.5, Seed: 42})
		var out []int
		for i := 0; i < 40; i++ {
			out = append(out, f.templatesCode("EMU_none"))
		}
		return out
	}
	a, b := outcomes(), outcomes()
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("same seed, different draws:\n%v\n%v", a, b)
	}
	seen := map[int]bool{}
	for _, c := range a {
		seen[c] = true
	}
	if !seen[-1] || !seen[40001] || len(seen) != 2 {
		t.Fatalf("a 0.5 rate should give both outcomes in 40 calls: %v", a)
	}
}

func TestCallsCountsEveryRequestPerPath(t *testing.T) {
	f := newFixture(t, wechattest.Options{})
	f.token()
	f.token()
	f.send("", msg(alice, tplOnce, goodOnce))
	f.do(http.MethodGet, "/cgi-bin/nope", nil, nil)
	got := f.emu.Calls()
	want := map[string]int{wechattest.PathStableToken: 2, wechattest.PathSend: 1, "/cgi-bin/nope": 1}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Calls() = %v, want %v", got, want)
	}
}
