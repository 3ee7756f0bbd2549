package wechattest

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// WeChat's paths the emulator serves.
const (
	PathToken        = "/cgi-bin/token"
	PathStableToken  = "/cgi-bin/stable_token"
	PathSend         = "/cgi-bin/message/subscribe/send"
	PathCode2Session = "/sns/jscode2session"
	PathTemplates    = "/wxaapi/newtmpl/gettemplate"

	// The official account's.
	PathTemplateSend  = "/cgi-bin/message/template/send"
	PathBizSend       = "/cgi-bin/message/subscribe/bizsend"
	PathUserInfo      = "/cgi-bin/user/info"
	PathUserInfoBatch = "/cgi-bin/user/info/batchget"
	PathUserList      = "/cgi-bin/user/get"
)

// DevPrefix is where the endpoints for people (not WeChat's API) live. No
// WeChat path starts with an underscore, so they cannot collide.
const DevPrefix = "/_dev/"

type route struct {
	method  string
	handler func(*call)
	// holdsUser: the handler applies the latency fault itself, inside the
	// window in which it holds the recipient (43108 detection).
	holdsUser bool
}

var routes map[string]route

func init() {
	routes = map[string]route{
		PathToken:        {http.MethodGet, (*call).token, false},
		PathStableToken:  {http.MethodPost, (*call).stableToken, false},
		PathSend:         {http.MethodPost, (*call).send, true},
		PathCode2Session: {http.MethodGet, (*call).code2Session, false},
		PathTemplates:    {http.MethodGet, (*call).templates, false},

		PathTemplateSend:  {http.MethodPost, (*call).templateSend, false},
		PathBizSend:       {http.MethodPost, (*call).bizSend, false},
		PathUserInfo:      {http.MethodGet, (*call).userInfo, false},
		PathUserInfoBatch: {http.MethodPost, (*call).userInfoBatch, false},
		PathUserList:      {http.MethodGet, (*call).userList, false},
	}
}

// call is one request to a WeChat path.
type call struct {
	e     *Emulator
	w     http.ResponseWriter
	r     *http.Request
	delay time.Duration
	// waited: the latency fault was spent. The send handler spends it
	// while it holds the recipient; any other answer spends it first.
	waited bool
	// lose: carry the request out, then drop the connection instead of
	// answering (the LostReplyRate fault).
	lose bool
	// payload is the request body, read before anything else (see ServeHTTP).
	payload    []byte
	payloadErr error
}

// spendDelay sleeps the latency fault once. Never call it holding a lock.
func (c *call) spendDelay() {
	if !c.waited {
		c.waited = true
		c.e.wait(c.r.Context(), c.delay)
	}
}

// ServeHTTP serves WeChat's API and the /_dev/ endpoints.
func (e *Emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	e.calls.add(path)
	if strings.HasPrefix(path, DevPrefix) || path+"/" == DevPrefix {
		e.serveDev(w, r)
		return
	}
	rt, ok := routes[path]
	if !ok {
		http.NotFound(w, r)
		return
	}
	c := &call{e: e, w: w, r: r}
	if r.Method == http.MethodPost {
		// Reading the body to its end lets net/http notice a client that
		// hangs up, and so end r.Context(), while a fault holds the request.
		c.payload, c.payloadErr = io.ReadAll(io.LimitReader(r.Body, maxBody))
	}
	if r.Method != rt.method {
		// WeChat answers a wrong method with an errcode, HTTP 200:
		// 43002 "require POST method" is documented for stable_token;
		// 43001 is its GET counterpart.
		if rt.method == http.MethodPost {
			c.fail(43002, "require POST method")
		} else {
			c.fail(43001, "require GET method")
		}
		return
	}
	if f := e.faults.Load(); f != nil && f.applies(path) {
		c.delay = f.latency()
		switch f.draw() {
		case outcomeSystemError:
			c.fail(-1, "system error")
			return
		case outcomeHTTP500:
			c.spendDelay()
			http.Error(w, "500 Internal Server Error", http.StatusInternalServerError)
			return
		case outcomeDrop:
			c.spendDelay()
			drop(w)
			return
		case outcomeLostReply:
			c.lose = true
		case outcomeTimeout:
			// The server is slow: the client gives up first (which ends
			// r.Context), yet the request is still carried out, so the
			// caller cannot know whether it happened.
			e.wait(r.Context(), f.hang)
		}
	}
	if !rt.holdsUser {
		c.spendDelay()
	}
	rt.handler(c)
}

// drop closes the connection without an answer.
func drop(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			_ = conn.Close()
			return
		}
	}
	// HTTP/2 or a recorder: aborting the handler resets the stream.
	panic(http.ErrAbortHandler)
}

// reply writes a JSON answer, as WeChat does with HTTP 200.
func (c *call) reply(body []byte) {
	c.spendDelay()
	if c.lose {
		drop(c.w)
		return
	}
	h := c.w.Header()
	h["Content-Type"] = jsonContentType
	_, _ = c.w.Write(body)
}

var jsonContentType = []string{"application/json; encoding=utf-8"}

func (c *call) replyJSON(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		c.fail(-1, "system error")
		return
	}
	c.reply(b)
}

// fail answers like WeChat does: HTTP 200 with errcode and errmsg, the
// errmsg ending with a request id.
func (c *call) fail(code int, msg string) {
	c.e.countError(code)
	b := make([]byte, 0, 96+len(msg))
	b = append(b, `{"errcode":`...)
	b = append(b, itoa(int64(code))...)
	b = append(b, `,"errmsg":`...)
	m, _ := json.Marshal(msg + " rid: " + c.e.rid())
	b = append(b, m...)
	b = append(b, '}')
	c.reply(b)
}

// maxBody bounds what a request body may hold; WeChat's are small.
const maxBody = 1 << 20

// body is the request body.
func (c *call) body() ([]byte, error) { return c.payload, c.payloadErr }

// callCounter counts requests per path. Paths the emulator does not serve
// are counted too, up to a bound, so a scanner cannot grow it forever.
type callCounter struct {
	m     sync.Map // path -> *atomic.Int64
	other atomic.Int64
	n     atomic.Int32
}

const maxCountedPaths = 256

func (cc *callCounter) add(path string) {
	if v, ok := cc.m.Load(path); ok {
		v.(*atomic.Int64).Add(1)
		return
	}
	if cc.n.Load() >= maxCountedPaths {
		cc.other.Add(1)
		return
	}
	v, loaded := cc.m.LoadOrStore(path, new(atomic.Int64))
	if !loaded {
		cc.n.Add(1)
	}
	v.(*atomic.Int64).Add(1)
}

// Calls returns how many requests each path received, failed ones (faults,
// errcodes, wrong methods) included. Paths beyond the first 256 distinct
// ones are counted under "other".
func (e *Emulator) Calls() map[string]int {
	out := map[string]int{}
	e.calls.m.Range(func(k, v any) bool {
		out[k.(string)] = int(v.(*atomic.Int64).Load())
		return true
	})
	if n := e.calls.other.Load(); n > 0 {
		out["other"] = int(n)
	}
	return out
}
