package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
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
// else: no rules, no state, no results, no retries.
type baseline struct {
	wx       *fakeWeChat
	client   *http.Client
	inFlight int

	token atomic.Pointer[string]
	ok    atomic.Int64 // sends WeChat accepted
	fails atomic.Int64
}

func newBaseline(wx *fakeWeChat, inFlight int) *baseline {
	tr := &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 512, IdleConnTimeout: 90 * time.Second}
	return &baseline{wx: wx, client: &http.Client{Transport: tr, Timeout: 10 * time.Second}, inFlight: inFlight}
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
		if err != nil || code != 0 {
			b.fails.Add(1)
		} else {
			b.ok.Add(1)
		}
		break
	}
	_ = m.Ack()
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
