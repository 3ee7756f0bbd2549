package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/wxbridge/wxbridge/rules"
	"github.com/wxbridge/wxbridge/wechat/wechattest"
)

func cmdEmulate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newFlags("emulate", stderr, "emulate [--listen ADDR] [--callback URL] [--rules rules.yaml]")
	listen := f.str("listen", "WXBRIDGE_EMULATOR_LISTEN", "127.0.0.1:8081", "address the emulator serves the WeChat API on")
	rulesPath := f.str("rules", "WXBRIDGE_RULES", "rules.yaml", "rules file whose apps and templates the emulator knows")
	if pos, err := f.parse(args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usagef("unexpected arguments %q", pos)
	}
	log := newLogger(stderr)
	set, err := rules.Load(*rulesPath)
	if err != nil {
		return &usageError{err}
	}
	emu := wechattest.New(wechattest.Options{AutoUsers: true})
	configureEmulator(emu, set)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: emu, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
	}()
	log.Info("WeChat emulator listening", "url", "http://"+ln.Addr().String())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// configureEmulator registers the apps and templates of a rule set with the
// emulator, so it checks sends the way WeChat would for those templates.
func configureEmulator(emu *wechattest.Emulator, set *rules.Set) {
	for _, a := range set.Apps {
		emu.AddApp(a.AppID, a.Secret)
	}
	for _, t := range set.Templates {
		kind := wechattest.OneTime
		if t.Kind == rules.KindLongTerm {
			kind = wechattest.LongTerm
		}
		emu.AddTemplate(set.Apps[t.App].AppID, wechattest.Template{ID: t.ID, Title: t.Name, Kind: kind, Keywords: t.Keywords})
	}
}
