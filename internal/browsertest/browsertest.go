// Package browsertest drives a headless Chromium for tests of the operator
// console: the console's own (package console) and the product's end to
// end (cmd/wxbridge). It is imported by tests only.
//
// A browser that cannot start fails the test, never skips it: the console
// is only tested if it runs. Chromium is Debian's /usr/bin/chromium unless
// $WXBRIDGE_CHROMIUM names another. Screenshots go to
// $WXBRIDGE_SCREENSHOTS, else to console/screenshots in the module
// (git-ignored), so that a person can look at every page.
//
// A Page is for one test goroutine.
package browsertest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// ChromiumPath is Debian's chromium; WXBRIDGE_CHROMIUM names another.
func ChromiumPath() string {
	if p := os.Getenv("WXBRIDGE_CHROMIUM"); p != "" {
		return p
	}
	return "/usr/bin/chromium"
}

// StepLimit bounds each step of a Page: generous, for a loaded machine; a
// passing test never waits it out.
const StepLimit = 30 * time.Second

// Page is one tab of a headless Chromium with a fresh profile. Its methods
// fail the test when a step fails or takes longer than StepLimit.
type Page struct {
	t     testing.TB
	ctx   context.Context
	shots string
}

// Start starts the browser, or fails the test. It is closed, and its
// profile removed, when the test ends.
func Start(t testing.TB) *Page {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(ChromiumPath()),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1440, 1000),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc() // waits for the browser to exit, before its profile is removed
	})
	// The first run starts the browser; it lives as long as ctx, so this
	// call has no timeout of its own (the allocator bounds the start).
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start Chromium %s: %v (Debian: apt-get install -y chromium)", ChromiumPath(), err)
	}
	return &Page{t: t, ctx: ctx}
}

// step runs one action within StepLimit.
func step[T any](p *Page, a chromedp.Action[T]) (T, error) {
	ctx, cancel := context.WithTimeout(p.ctx, StepLimit)
	defer cancel()
	return chromedp.Run(ctx, a)
}

// Do runs steps, what saying what they do for the failure message.
func (p *Page) Do(what string, steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, StepLimit)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		p.t.Fatalf("%s: %v", what, err)
	}
}

// Text is the text of the first element selector (CSS) matches, once it
// is there.
func (p *Page) Text(selector string) string {
	p.t.Helper()
	s, err := step(p, chromedp.Text(chromedp.CSS(selector)))
	if err != nil {
		p.t.Fatalf("read %s: %v", selector, err)
	}
	return s
}

// Value is the value of the form field selector matches.
func (p *Page) Value(selector string) string {
	p.t.Helper()
	s, err := step(p, chromedp.Value(chromedp.CSS(selector)))
	if err != nil {
		p.t.Fatalf("read the value of %s: %v", selector, err)
	}
	return s
}

// Location is the URL of the page shown.
func (p *Page) Location() string {
	p.t.Helper()
	s, err := step(p, chromedp.Location())
	if err != nil {
		p.t.Fatalf("location: %v", err)
	}
	return s
}

// Count is how many elements selector matches now (without waiting).
func (p *Page) Count(selector string) int {
	p.t.Helper()
	n, err := step(p, chromedp.Evaluate[int](fmt.Sprintf(`document.querySelectorAll(%q).length`, selector)))
	if err != nil {
		p.t.Fatalf("count %s: %v", selector, err)
	}
	return n
}

// Shot writes a full-page screenshot to name.png in ScreenshotDir.
func (p *Page) Shot(name string) {
	p.t.Helper()
	if p.shots == "" {
		p.shots = ScreenshotDir(p.t)
	}
	png, err := step(p, chromedp.FullScreenshot(100)) // 100: PNG
	if err != nil {
		p.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(p.shots, name+".png"), png, 0o644); err != nil {
		p.t.Fatal(err)
	}
}

// Cookie is the browser's cookie name for url, or nil.
func (p *Page) Cookie(url, name string) *network.Cookie {
	p.t.Helper()
	c, err := step(p, chromedp.Action[*network.Cookie](func(ctx context.Context, tg *chromedp.Target) (*network.Cookie, error) {
		res, err := cdp.Call(ctx, tg, network.GetCookies, network.GetCookiesParams{URLs: []string{url}})
		if err != nil {
			return nil, err
		}
		for _, c := range res.Cookies {
			if c.Name == name {
				return c, nil
			}
		}
		return nil, nil
	}))
	if err != nil {
		p.t.Fatalf("read cookies: %v", err)
	}
	return c
}

// ScreenshotDir is $WXBRIDGE_SCREENSHOTS, else console/screenshots in the
// module, created if need be.
func ScreenshotDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("WXBRIDGE_SCREENSHOTS")
	if dir == "" {
		root, err := moduleRoot()
		if err != nil {
			t.Fatal(err)
		}
		dir = filepath.Join(root, "console", "screenshots")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots of each page in %s", dir)
	return dir
}

// moduleRoot is the nearest directory up from the working directory (a
// test's package directory) that holds go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("browsertest: no go.mod above the working directory; set WXBRIDGE_SCREENSHOTS")
		}
		dir = parent
	}
}
