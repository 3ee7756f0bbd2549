package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxbridge/wxbridge/wechat/wechattest"
)

// The baseline's own stream, so that the bridge never sees its events.
const (
	baselineStream  = "BASELINE"
	baselineSubject = "baseline.notice"
)

// baseline is the floor the bridge is compared with: JetStream consume →
// HTTP POST to WeChat → ack, with the bridge's concurrency and nothing
// else: no rules, no state, no results, no retries (but the one after a
// 40001, without which it would not send at all once a token is replaced).
//
// It promises that every event is posted once and acked, not that every
// one is sent: with more workers than users, two events for one user can
// be posted at the same moment, and WeChat refuses the second with 43108
// ("concurrent send to the same user"), which the bridge avoids by sending
// to one openid at a time. The baseline counts such refusals and moves on,
// as a consumer this minimal would.
type baseline struct {
	wx       *fakeWeChat
	client   *http.Client
	inFlight int

	token atomic.Pointer[string]
	ok    atomic.Int64 // sends WeChat accepted
	fails atomic.Int64

	failMu   sync.Mutex
	failures map[string]int // why sends failed: "errcode 43108", "transport"
}

func newBaseline(wx *fakeWeChat, inFlight int) *baseline {
	tr := &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 512, IdleConnTimeout: 90 * time.Second}
	return &baseline{wx: wx, client: &http.Client{Transport: tr, Timeout: 10 * time.Second}, inFlight: inFlight,
		failures: map[string]int{}}
}

// run consumes from the baseline stream until ctx ends.
func (b *baseline) run(ctx context.Context, nc *nats.Conn) error {
	defer b.client.CloseIdleConnections()
	if err := b.fetchToken(ctx); err != nil {
		return err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, baselineStream, jetstream.ConsumerConfig{
		Durable: "baseline", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: b.inFlight, AckWait: time.Minute,
	})
	if err != nil {
		return fmt.Errorf("baseline consumer: %w", err)
	}
	work := make(chan jetstream.Msg, b.inFlight)
	var wg sync.WaitGroup
	for range b.inFlight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range work {
				b.handle(ctx, m)
			}
		}()
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		select {
		case work <- m:
		case <-ctx.Done():
		}
	}, jetstream.PullMaxMessages(b.inFlight))
	if err != nil {
		close(work)
		wg.Wait()
		return fmt.Errorf("baseline consume: %w", err)
	}
	<-ctx.Done()
	cc.Stop()
	<-cc.Closed()
	close(work)
	wg.Wait()
	return nil
}

type baselineEvent struct {
	User string `json:"user"`
	Text string `json:"text"`
}

// handle sends one event's message and acks it, whatever WeChat said.
func (b *baseline) handle(ctx context.Context, m jetstream.Msg) {
	var ev baselineEvent
	_ = json.Unmarshal(m.Data(), &ev)
	id := m.Headers().Get(nats.MsgIdHdr)
	body, _ := json.Marshal(map[string]any{
		"touser": openIDOf(ev.User), "template_id": benchTemplate, "page": "pages/notice/detail?id=" + id,
		"miniprogram_state": "formal",
		"data":              map[string]any{"character_string1": map[string]string{"value": id}, "thing2": map[string]string{"value": ev.Text}},
	})
	for attempt := 0; attempt < 2; attempt++ {
		code, err := b.post(ctx, body)
		if err == nil && code == 40001 && attempt == 0 {
			_ = b.fetchToken(ctx)
			continue
		}
		switch {
		case err != nil:
			b.fail("transport")
		case code != 0:
			b.fail("errcode " + strconv.Itoa(code))
		default:
			b.ok.Add(1)
		}
		break
	}
	_ = m.Ack()
}

// fail counts a failed send. The reason is counted before the total, which
// the bench polls, so the reasons are complete once the total is.
func (b *baseline) fail(reason string) {
	b.failMu.Lock()
	b.failures[reason]++
	b.failMu.Unlock()
	b.fails.Add(1)
}

// failureReasons returns a copy of the failure counts by reason.
func (b *baseline) failureReasons() map[string]int {
	b.failMu.Lock()
	defer b.failMu.Unlock()
	return maps.Clone(b.failures)
}

func (b *baseline) post(ctx context.Context, body []byte) (int, error) {
	u := b.wx.url + wechattest.PathSend + "?access_token=" + url.QueryEscape(*b.token.Load())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := b.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	var st struct {
		ErrCode int `json:"errcode"`
	}
	if err := json.Unmarshal(data, &st); err != nil {
		return 0, fmt.Errorf("HTTP %d: %w", resp.StatusCode, err)
	}
	return st.ErrCode, nil
}

func (b *baseline) fetchToken(ctx context.Context) error {
	body, _ := json.Marshal(map[string]string{"grant_type": "client_credential", "appid": benchAppID, "secret": benchSecret})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.wx.url+wechattest.PathStableToken, bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return fmt.Errorf("baseline token: %w", err)
	}
	defer resp.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
		ErrCode     int    `json:"errcode"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil {
		return fmt.Errorf("baseline token: %w", err)
	}
	if tok.AccessToken == "" {
		return fmt.Errorf("baseline token: errcode %d", tok.ErrCode)
	}
	b.token.Store(&tok.AccessToken)
	return nil
}
