package wechattest_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/wxbridge/wxbridge/wechat/wechattest"
)

// benchEmulator is an emulator with 1024 users who accepted a long-term
// template, and one send body per user.
func benchEmulator(b *testing.B) (*wechattest.Emulator, string, [][]byte) {
	b.Helper()
	emu := wechattest.New(wechattest.Options{})
	b.Cleanup(func() { _ = emu.Close() })
	emu.AddApp(appID, secret)
	emu.AddTemplate(appID, wechattest.Template{ID: tplLong, Kind: wechattest.LongTerm,
		Keywords: map[string]string{"thing1": "thing", "time2": "time", "character_string3": "character_string", "phrase4": "phrase"}})
	bodies := make([][]byte, 1024)
	for i := range bodies {
		openid := "o-bench-" + strconv.Itoa(i)
		emu.AddUser(appID, openid)
		emu.Accept(appID, openid, tplLong)
		bodies[i], _ = json.Marshal(msg(openid, tplLong, map[string]string{
			"thing1": "Acme 订单已发货", "time2": "2026-11-01 09:00", "character_string3": "SN-2026-10-42", "phrase4": "配送中"}))
	}
	rec := httptest.NewRecorder()
	emu.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, wechattest.PathStableToken,
		bytes.NewReader([]byte(`{"grant_type":"client_credential","appid":"`+appID+`","secret":"`+secret+`"}`))))
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &tok); err != nil || tok.AccessToken == "" {
		b.Fatalf("token: %v %s", err, rec.Body)
	}
	return emu, tok.AccessToken, bodies
}

// BenchmarkEmulatorSend pushes sends through a real HTTP server, as the
// bridge's benchmarks do: 64 concurrent senders, each to its own users.
func BenchmarkEmulatorSend(b *testing.B) {
	emu, tok, bodies := benchEmulator(b)
	srv := httptest.NewServer(emu)
	b.Cleanup(srv.Close)
	tr := &http.Transport{MaxIdleConnsPerHost: 128}
	b.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr}
	url := srv.URL + wechattest.PathSend + "?access_token=" + tok
	var worker atomic.Int64
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		// Users are spread over the workers so no two send to one user
		// at once (that would be 43108, as on WeChat).
		w := int(worker.Add(1)-1) % 64
		i := 0
		for pb.Next() {
			body := bodies[w+64*(i%(len(bodies)/64))]
			i++
			resp, err := client.Post(url, "application/json", bytes.NewReader(body))
			if err != nil {
				b.Error(err)
				return
			}
			data, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !bytes.HasPrefix(data, []byte(`{"errcode":0,`)) {
				b.Errorf("send: %s", data)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sends/s")
}

// BenchmarkEmulatorSendHandler is the emulator's own cost per send, without
// HTTP.
func BenchmarkEmulatorSendHandler(b *testing.B) {
	emu, tok, bodies := benchEmulator(b)
	target := wechattest.PathSend + "?access_token=" + tok
	var worker atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		w := int(worker.Add(1)-1) % 64
		i := 0
		for pb.Next() {
			body := bodies[w+64*(i%(len(bodies)/64))]
			i++
			rec := httptest.NewRecorder()
			emu.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, target, bytes.NewReader(body)))
			if rec.Code != 200 || !bytes.HasPrefix(rec.Body.Bytes(), []byte(`{"errcode":0,`)) {
				b.Errorf("send: %s", rec.Body)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sends/s")
}
