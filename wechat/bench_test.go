package wechat_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/wxbridge/wxbridge/wechat"
	"github.com/wxbridge/wxbridge/wechat/wechattest"
)

// BenchmarkSend measures sends per second through the client (token cache,
// JSON, pooled HTTP) against the in-process emulator, with 1, 64 and 256
// concurrent callers. Each caller sends to its own user: concurrent sends
// to one user are 43108 on WeChat, and on the emulator.
func BenchmarkSend(b *testing.B) {
	const appid, secret, tpl = "wxbench000000000001", "SECRET-bench-00000000000000000000", "TPL-bench"
	for _, callers := range []int{1, 64, 256} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			emu := wechattest.New(wechattest.Options{AutoUsers: true, AutoSubscribe: true})
			emu.AddApp(appid, secret)
			emu.AddTemplate(appid, wechattest.Template{ID: tpl, Title: "订单发货", Kind: wechattest.OneTime,
				Keywords: map[string]string{"thing1": "thing"}})
			srv := httptest.NewServer(emu)
			defer srv.Close()
			c, err := wechat.New(wechat.Config{BaseURL: srv.URL})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			c.SetApp("bench", wechat.App{AppID: appid, Secret: secret})
			ctx := context.Background()
			message := func(i int) wechat.Message {
				return wechat.Message{ToUser: fmt.Sprintf("o-bench-%d", i), TemplateID: tpl,
					Data: map[string]string{"thing1": "订单已发货"}}
			}
			// The token is fetched before the clock starts.
			if _, err := c.Send(ctx, "bench", message(0)); err != nil {
				b.Fatal(err)
			}

			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for w := range callers {
				wg.Go(func() {
					m := message(w)
					for next.Add(1) <= int64(b.N) {
						if _, err := c.Send(ctx, "bench", m); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sends/s")
		})
	}
}
