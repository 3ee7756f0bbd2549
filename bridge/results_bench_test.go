package bridge

import (
	"testing"
	"time"

	"github.com/wxbridge/wxbridge/storage"
)

// BenchmarkResultEncoding is what announcing one outcome costs: the result
// payload, its deterministic Nats-Msg-Id and subject (resultMessage, run
// inside the transaction that records the outcome), and the ledger change
// a one-time send announces (LedgerHook).
func BenchmarkResultEncoding(b *testing.B) {
	now := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	rec := storage.SendRecord{Key: storage.SendKey("e12345", "statement-to-reconcilers", "u:u-17"), EventID: "e12345",
		EventType: "statement.issued", Rule: "statement-to-reconcilers", App: "main", TemplateID: "NKeZWyyEkOl4tT6fYwJN90RxCHt_xxxxxxx",
		UserID: "u-17", OpenID: "oBench-u17-0123456789abcdef", State: storage.StateSent, ErrMsg: "ok", MsgID: "1864323726461255681",
		Attempts: 1, CreatedAt: now, UpdatedAt: now}
	b.Run("result", func(b *testing.B) {
		br := &Bridge{cfg: Config{Prefix: "wxbridge"}}
		b.ReportAllocs()
		for b.Loop() {
			m := br.resultMessage(rec, "")
			if len(m.Payload) == 0 {
				b.Fatal("empty payload")
			}
		}
	})
	b.Run("ledger", func(b *testing.B) {
		hook := LedgerHook("wxbridge")
		sub := storage.Subscription{App: "main", OpenID: rec.OpenID, UserID: rec.UserID, TemplateID: rec.TemplateID,
			Status: storage.StatusAccept, Kind: storage.KindOneTime, Credits: 3, Source: storage.SourceSend, UpdatedAt: now}
		b.ReportAllocs()
		for b.Loop() {
			if len(hook(sub)) != 1 {
				b.Fatal("no message")
			}
		}
	})
}
