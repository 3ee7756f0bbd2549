package wechattest

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/wxbridge/wxbridge/wechat"
)

// The official account (服务号) side of the emulator: people, followers,
// template messages, subscription notifications and user info. The pages
// each behaviour was checked against are cited next to it; where they are
// silent the comment says so and what was chosen.

// Person is one WeChat user as an open platform account sees them: one
// unionid, and an openid per app ("同一用户，对同一个微信开放平台下的不同应用，
// unionid是相同的",
// https://developers.weixin.qq.com/doc/offiaccount/User_Management/Get_users_basic_information_UnionID.html).
// The emulator's apps all belong to one open platform account.
type Person struct {
	UnionID string
	// OpenIDs maps appid to the person's openid in that app; a Mini
	// Program openid and an official account openid of one person differ.
	OpenIDs map[string]string
}

// AddPerson makes each openid a user of its app with the person's unionid:
// code2session then answers it (IssueCode with unionid ""), and so does
// user/info while the person follows the official account.
func (e *Emulator) AddPerson(p Person) {
	apps := make([]string, 0, len(p.OpenIDs))
	for appid := range p.OpenIDs {
		apps = append(apps, appid)
	}
	sort.Strings(apps)
	for _, appid := range apps {
		a := e.mustApp("AddPerson", appid)
		a.mu.Lock()
		a.user(p.OpenIDs[appid], true).unionid = p.UnionID
		a.mu.Unlock()
	}
}

// officialApp is mustApp for methods that only make sense for an official
// account.
func (e *Emulator) officialApp(method, appid string) *app {
	a := e.mustApp(method, appid)
	a.mu.Lock()
	official := a.official
	a.mu.Unlock()
	if !official {
		panic(fmt.Sprintf("wechattest: %s: %s is a Mini Program (call AddOfficialAccount)", method, appid))
	}
	return a
}

// AddFollower makes openid a follower of the official account without a
// push, as someone who followed before the bridge was running; unionid ""
// keeps the one the user has.
func (e *Emulator) AddFollower(appid, openid, unionid string) {
	a := e.officialApp("AddFollower", appid)
	a.mu.Lock()
	defer a.mu.Unlock()
	u := a.user(openid, true)
	if unionid != "" {
		u.unionid = unionid
	}
	if !u.following {
		u.following, u.followedAt, u.followQR = true, e.opts.Now(), ""
	}
}

// Follow is the user following the official account: from now on template
// messages reach them, and the account's callback gets a subscribe event.
// A follower following again changes nothing and pushes nothing.
func (e *Emulator) Follow(appid, openid string) { e.follow("Follow", appid, openid, "") }

// FollowByQR is Follow through a QR code with a scene: the subscribe event
// carries EventKey "qrscene_<scene>" and the code's Ticket
// (https://developers.weixin.qq.com/doc/offiaccount/Message_Management/Receiving_event_pushes.html,
// read through verbatim copies).
func (e *Emulator) FollowByQR(appid, openid, scene string) {
	e.follow("FollowByQR", appid, openid, scene)
}

func (e *Emulator) follow(method, appid, openid, scene string) {
	a := e.officialApp(method, appid)
	a.mu.Lock()
	u := a.user(openid, true)
	if u.following {
		a.mu.Unlock()
		return
	}
	u.following, u.followedAt, u.followQR = true, e.opts.Now(), scene
	cb := a.callback
	a.mu.Unlock()
	if cb == nil {
		return
	}
	ev := Event{Type: EventFollow, OpenID: openid}
	if scene != "" {
		ev.EventKey, ev.Ticket = "qrscene_"+scene, "gQH47joAAAAAAAAAASxodHRwOi8v"+randomString(16, alnum)
	}
	_ = e.queueEvent(a, cb, ev)
}

// Unfollow is the user unfollowing the account: template messages get
// 43004 again, and the callback gets an unsubscribe event.
func (e *Emulator) Unfollow(appid, openid string) {
	a := e.officialApp("Unfollow", appid)
	a.mu.Lock()
	u := a.user(openid, false)
	if u == nil || !u.following {
		a.mu.Unlock()
		return
	}
	u.following = false
	cb := a.callback
	a.mu.Unlock()
	if cb != nil {
		_ = e.queueEvent(a, cb, Event{Type: EventUnfollow, OpenID: openid})
	}
}

// Following reports whether openid follows the official account.
func (e *Emulator) Following(appid, openid string) bool {
	a := e.officialApp("Following", appid)
	a.mu.Lock()
	defer a.mu.Unlock()
	u := a.user(openid, false)
	return u != nil && u.following
}

// RefuseMessages is the user setting 拒收 for the official account's
// messages while still following it: template messages are accepted by
// the API and their TEMPLATESENDJOBFINISH says "failed:user block"
// ("送达由于用户拒收（用户设置拒绝接收公众号消息）而失败",
// https://developers.weixin.qq.com/doc/offiaccount/Message_Management/Template_Message_Interface.html).
// refuse false takes it back.
func (e *Emulator) RefuseMessages(appid, openid string, refuse bool) {
	a := e.officialApp("RefuseMessages", appid)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.user(openid, true).refusing = refuse
}

// clientMsgWindow is how long WeChat remembers a template message's
// client_msg_id: "对于同一个openid + client_msg_id, 只发送一条消息,10分钟有效,
// 超过10分钟不保证效果" (the client_msg_id row of sendTemplateMessage, quoted
// by https://github.com/silenceper/wechat/pull/651; the page itself,
// https://developers.weixin.qq.com/doc/service/api/notify/template/api_sendtemplatemessage.html,
// could only be read in part).
const clientMsgWindow = 10 * time.Minute

// maxClientMsgID: the template docs give no length; the mass-send docs
// limit their clientmsgid to 64 bytes and answer 45067 beyond (community
// report of {"errcode":45067,"errmsg":"clientmsgid size out of limit"}).
// The emulator holds template messages to the same (unconfirmed).
const maxClientMsgID = 64

type clientMsgKey struct{ openid, id string }

type clientMsg struct {
	msgid string
	at    time.Time
}

type officialSendRequest struct {
	ToUser      string                  `json:"touser"`
	TemplateID  string                  `json:"template_id"`
	URL         string                  `json:"url"`
	Page        string                  `json:"page"`
	MiniProgram *wechat.MiniProgram     `json:"miniprogram"`
	ClientMsgID string                  `json:"client_msg_id"`
	Data        map[string]keywordField `json:"data"`
}

// officialCall starts a call to an official account API: it checks the
// token and that the app is an official account (48001 "api unauthorized"
// for a Mini Program's token), and returns the app locked, or nil once it
// has answered.
func (c *call) officialCall() *app {
	a := c.authorize()
	if a == nil {
		return nil
	}
	if !a.official {
		a.mu.Unlock()
		c.fail(48001, "api unauthorized")
		return nil
	}
	return a
}

// officialRequest reads the request body into req and takes the account
// as officialCall does (nil when it answered already). badBody says the
// body did not parse; fail unlocks the account and answers an error.
func (c *call) officialRequest(req any) (a *app, badBody bool, fail func(code int, msg string)) {
	body, readErr := c.body()
	badBody = readErr != nil || json.Unmarshal(body, req) != nil
	if r, ok := req.(*officialSendRequest); ok && r.MiniProgram != nil && r.MiniProgram.AppID == "" && r.MiniProgram.PagePath == "" {
		// No jump. The most used Go SDK (github.com/silenceper/wechat/v2)
		// sends "miniprogram":{"appid":"","pagepath":""} with every
		// template message that opens none, and its users' messages go
		// out: WeChat takes it for no mini program (TestThirdPartySDK).
		r.MiniProgram = nil
	}
	if a = c.officialCall(); a == nil {
		return nil, false, nil
	}
	return a, badBody, func(code int, msg string) {
		a.mu.Unlock()
		c.fail(code, msg)
	}
}

// officialSend starts a message send of an official account (template
// message or subscription notification): the call's checks, then the daily
// quota fault (45009) and the body (47001). It returns the app locked, or
// nil once it has answered.
func (c *call) officialSend(req *officialSendRequest) (a *app, fail func(code int, msg string)) {
	a, badBody, fail := c.officialRequest(req)
	if a == nil {
		return nil, nil
	}
	switch {
	case c.e.quotaExhausted():
		fail(45009, "reach max api daily quota limit")
		return nil, nil
	case badBody:
		fail(47001, "data format error")
		return nil, nil
	}
	return a, fail
}

// templateSend serves POST /cgi-bin/message/template/send
// (https://developers.weixin.qq.com/doc/service/api/notify/template/api_sendtemplatemessage.html
// and https://developers.weixin.qq.com/doc/offiaccount/Message_Management/Template_Message_Interface.html).
// It checks, in order: the token and the kind of app (48001), the daily
// quota fault (45009, "当前每个账号的模板消息的日调用上限为10万次"), the body
// (47001), the client_msg_id (45067 too long; 45065 a repeat within 10
// minutes, answered with the first message's msgid), the openid (40003,
// "不合法的 OpenID ，请开发者确认 OpenID （该用户）是否已关注公众号，或是否是其他
// 公众号的 OpenID", Global_Return_Code.html), the template (40037), that the
// user follows (43004 "require subscribe"), the mini program the card opens
// (40013 unless it is one of the emulator's Mini Programs: "该小程序appid
// 必须与发模板消息的公众号是绑定关联关系"), and the data (47003 naming the
// field, with the keyword types of category templates). Then it answers a
// msgid and pushes TEMPLATESENDJOBFINISH.
//
// Not documented, chosen here: the order of the checks; the repeat answer
// (45065 "clientmsgid exist" with the msgid, as the mass-send API answers a
// repeated clientmsgid, Batch_Sends_and_Originality_Checks.html: the only
// documented refusal of a repeat); the 64-byte limit; 40013 for a
// mini program that is not linked.
func (c *call) templateSend() {
	e := c.e
	var req officialSendRequest
	a, fail := c.officialSend(&req)
	if a == nil {
		return
	}
	now := e.opts.Now()
	switch {
	case len(req.ClientMsgID) > maxClientMsgID:
		fail(45067, "clientmsgid size out of limit")
		return
	}
	key := clientMsgKey{req.ToUser, req.ClientMsgID}
	if req.ClientMsgID != "" {
		if prev, ok := a.clientMsgs[key]; ok && now.Sub(prev.at) < clientMsgWindow {
			a.mu.Unlock()
			c.e.countError(45065)
			c.reply([]byte(`{"errcode":45065,"errmsg":"clientmsgid exist rid: ` + e.rid() + `","msgid":` + prev.msgid + `}`))
			return
		}
	}
	u := a.user(req.ToUser, false)
	if u == nil {
		fail(40003, "invalid openid")
		return
	}
	t, ok := a.template(req.TemplateID)
	if !ok || t.Kind != TemplateMessage {
		fail(40037, "invalid template_id")
		return
	}
	if !u.following {
		fail(43004, "require subscribe")
		return
	}
	refusing := u.refusing
	a.mu.Unlock()

	// Outside the lock: the template is immutable once registered, and the
	// emulator's lock is never taken under an app's.
	if req.MiniProgram != nil && !e.isMiniProgram(req.MiniProgram.AppID, a.appid) {
		c.fail(40013, "invalid appid")
		return
	}
	if msg := t.refusal(req.Data); msg != "" {
		c.fail(47003, msg)
		return
	}
	id := e.msgID.Add(1)
	msgid := strconv.FormatUint(id, 10)
	a.mu.Lock()
	if req.ClientMsgID != "" {
		for k, m := range a.clientMsgs {
			if now.Sub(m.at) >= clientMsgWindow {
				delete(a.clientMsgs, k)
			}
		}
		a.clientMsgs[key] = clientMsg{msgid: msgid, at: now}
	}
	cb := a.callback
	a.mu.Unlock()

	e.record(Sent{AppID: a.appid, Path: PathTemplateSend, MsgID: msgid, ToUser: req.ToUser, TemplateID: t.ID,
		URL: req.URL, MiniProgram: req.MiniProgram, ClientMsgID: req.ClientMsgID, Data: values(req.Data), At: now})
	c.reply([]byte(`{"errcode":0,"errmsg":"ok","msgid":` + msgid + `}`))
	if cb == nil {
		return
	}
	// WeChat pushes the receipt once the job is done, whether or not the
	// message arrived ("在模版消息发送任务完成后，微信服务器会将是否送达成功作为
	// 通知，发送到开发者中心中填写的服务器配置地址中"), so always, unlike the
	// subscribe message's sent event.
	status := wechat.TemplateStatusSuccess
	switch {
	case refusing:
		status = wechat.TemplateStatusUserBlock
	case e.templateJobFails():
		status = wechat.TemplateStatusSystemFailed
	}
	_ = e.queueEventAfter(a, cb, Event{Type: EventTemplateSendJob, OpenID: req.ToUser, MsgID: msgid, Status: status}, cb.sentDelay())
}

// isMiniProgram reports whether appid is a Mini Program the official
// account oaID may open: the emulator links every Mini Program it has to
// every official account, as one open platform account would. The caller
// holds no app's lock.
func (e *Emulator) isMiniProgram(appid, oaID string) bool {
	if appid == "" || appid == oaID {
		return false
	}
	mp := e.app(appid)
	if mp == nil {
		return false
	}
	mp.mu.Lock()
	defer mp.mu.Unlock()
	return !mp.official
}

func values(data map[string]keywordField) map[string]string {
	out := make(map[string]string, len(data))
	for k, v := range data {
		out[k] = v.Value.s
	}
	return out
}

// bizSend serves POST /cgi-bin/message/subscribe/bizsend, an official
// account's subscription notification
// (https://developers.weixin.qq.com/doc/service/api/notify/notify/api_sendnewsubscribemsg.html):
// the token and kind of app (48001), the quota fault (45009), the body
// (47001), the openid (40003), the template (40037: a subscription
// notification template of this account), the mini program the card opens
// (40013, as for template messages), the data (47003 naming the field) and
// the user's credit (43101), with the one-time and long-term rules of the
// Mini Program's subscribe messages ("一次性订阅，指用户订阅一次，认证服务号可
// 不限时间地下发一条对应的订阅通知", Subscription_Messages/intro.html).
// Following is not needed: "对已关注认证服务号的用户，通知下发到号内，未关注的下发
// 到服务通知". It answers a msgid and, with Callback.SentEvents, pushes
// subscribe_msg_sent_event on the account's callback. page is taken as
// given: the older doc has it a web page, the newer one a mini program page.
func (c *call) bizSend() {
	e := c.e
	var req officialSendRequest
	a, fail := c.officialSend(&req)
	if a == nil {
		return
	}
	u := a.user(req.ToUser, e.opts.AutoUsers && req.ToUser != "")
	if u == nil {
		fail(40003, "invalid openid")
		return
	}
	t, ok := a.template(req.TemplateID)
	if !ok || t.Kind == TemplateMessage {
		fail(40037, "invalid template_id")
		return
	}
	if t.banned {
		fail(43107, "subscribe message capability banned")
		return
	}
	a.mu.Unlock()
	if req.MiniProgram != nil && !e.isMiniProgram(req.MiniProgram.AppID, a.appid) {
		c.fail(40013, "invalid appid")
		return
	}
	if field := t.invalidField(req.Data); field != "" {
		c.fail(47003, "argument invalid! data."+field+".value invalid")
		return
	}
	now := e.opts.Now()
	a.mu.Lock()
	if !e.mayReceive(u, t) {
		fail(43101, "user refuse to accept the msg")
		return
	}
	e.spend(u, t)
	cb := a.callback
	a.mu.Unlock()
	msgid := strconv.FormatUint(e.msgID.Add(1), 10)
	e.record(Sent{AppID: a.appid, Path: PathBizSend, MsgID: msgid, ToUser: req.ToUser, TemplateID: t.ID,
		Page: req.Page, MiniProgram: req.MiniProgram, Data: values(req.Data), At: now})
	c.reply([]byte(`{"errcode":0,"errmsg":"ok","msgid":` + msgid + `}`))
	if cb != nil && cb.cfg.SentEvents {
		ev := Event{Type: EventSent, OpenID: req.ToUser, List: []EventEntry{{TemplateID: t.ID, MsgID: msgid, ErrorStatus: "success"}}}
		_ = e.queueEventAfter(a, cb, ev, cb.sentDelay())
	}
}

// userInfoJSON is one user as /cgi-bin/user/info answers: the documented
// fields for a follower, only subscribe and openid for anyone else
// ("值为0时，代表此用户没有关注该公众号，拉取不到其余信息",
// https://developers.weixin.qq.com/doc/offiaccount/User_Management/Get_users_basic_information_UnionID.html).
type userInfoJSON struct {
	Subscribe      int    `json:"subscribe"`
	OpenID         string `json:"openid"`
	Language       string `json:"language,omitempty"`
	SubscribeTime  int64  `json:"subscribe_time,omitempty"`
	UnionID        string `json:"unionid,omitempty"`
	Remark         string `json:"remark"`
	GroupID        int    `json:"groupid"`
	TagIDList      []int  `json:"tagid_list"`
	SubscribeScene string `json:"subscribe_scene,omitempty"`
	QRScene        int64  `json:"qr_scene"`
	QRSceneStr     string `json:"qr_scene_str"`
}

func infoOf(openid string, u *user) any {
	if !u.following {
		return struct {
			Subscribe int    `json:"subscribe"`
			OpenID    string `json:"openid"`
		}{0, openid}
	}
	info := userInfoJSON{Subscribe: 1, OpenID: openid, Language: "zh_CN", SubscribeTime: u.followedAt.Unix(),
		UnionID: u.unionid, TagIDList: []int{}, SubscribeScene: "ADD_SCENE_OTHERS"}
	if u.followQR != "" {
		info.SubscribeScene = "ADD_SCENE_QR_CODE"
		if n, err := strconv.ParseInt(u.followQR, 10, 64); err == nil {
			info.QRScene = n
		} else {
			info.QRSceneStr = u.followQR
		}
	}
	return info
}

// userInfo serves GET /cgi-bin/user/info?openid=&lang=: 40003 for an openid
// the account has never seen (not of this account).
func (c *call) userInfo() {
	openid := c.r.URL.Query().Get("openid")
	a := c.officialCall()
	if a == nil {
		return
	}
	u := a.user(openid, false)
	if u == nil {
		a.mu.Unlock()
		c.fail(40003, "invalid openid")
		return
	}
	info := infoOf(openid, u)
	a.mu.Unlock()
	c.replyJSON(info)
}

// userInfoBatch serves POST /cgi-bin/user/info/batchget
// (https://developers.weixin.qq.com/doc/service/api/usermanage/userinfo/api_batchuserinfo.html):
// 1 to 100 openids ("最多支持一次拉取100条"; more or none: 40032 "不合法的
// openid 列表长度", Global_Return_Code.html, unconfirmed for this API), and
// the whole call refused with 40003 when one openid is not the account's
// (the doc asks for followers' openids and says no more; unconfirmed).
func (c *call) userInfoBatch() {
	var req struct {
		UserList []struct {
			OpenID string `json:"openid"`
			Lang   string `json:"lang"`
		} `json:"user_list"`
	}
	a, badBody, fail := c.officialRequest(&req)
	if a == nil {
		return
	}
	switch {
	case badBody:
		fail(47001, "data format error")
		return
	case len(req.UserList) == 0 || len(req.UserList) > wechat.MaxUserInfoBatch:
		fail(40032, "invalid openid list size")
		return
	}
	list := make([]any, 0, len(req.UserList))
	for _, it := range req.UserList {
		u := a.user(it.OpenID, false)
		if u == nil {
			fail(40003, "invalid openid")
			return
		}
		list = append(list, infoOf(it.OpenID, u))
	}
	a.mu.Unlock()
	c.replyJSON(struct {
		List []any `json:"user_info_list"`
	}{list})
}

// userList serves GET /cgi-bin/user/get?next_openid=: the account's
// followers' openids, a page at a time
// (https://developers.weixin.qq.com/doc/offiaccount/User_Management/Getting_a_User_List.html):
// "一次拉取调用最多拉取10000个关注者的OpenID", total is every follower,
// next_openid the page's last openid, "" once the list is complete
// ("关注者列表已返回完时,返回next_openid为空"). The page after an openid is
// the followers ordered after it, so one that unfollowed in between does
// not break the walk; an empty page leaves data out, as WeChat does.
func (c *call) userList() {
	after := c.r.URL.Query().Get("next_openid")
	a := c.officialCall()
	if a == nil {
		return
	}
	var ids []string
	for id, u := range a.users {
		if u.following {
			ids = append(ids, id)
		}
	}
	a.mu.Unlock()
	sort.Strings(ids)
	total := len(ids)
	if after != "" {
		ids = ids[sort.SearchStrings(ids, after):]
		if len(ids) > 0 && ids[0] == after {
			ids = ids[1:]
		}
	}
	size := c.e.opts.FollowerPage
	if size <= 0 {
		size = 10000
	}
	page := ids[:min(size, len(ids))]
	type data struct {
		OpenID []string `json:"openid"`
	}
	out := struct {
		Total      int    `json:"total"`
		Count      int    `json:"count"`
		Data       *data  `json:"data,omitempty"`
		NextOpenID string `json:"next_openid"`
	}{Total: total, Count: len(page)}
	if len(page) > 0 {
		out.Data = &data{page}
		if len(page) < len(ids) {
			out.NextOpenID = page[len(page)-1]
		}
	}
	c.replyJSON(out)
}

// Follower is a user of an official account, as /_dev/followers shows it.
type Follower struct {
	OpenID    string `json:"openid"`
	UnionID   string `json:"unionid,omitempty"`
	Following bool   `json:"following"`
	Refusing  bool   `json:"refusing,omitempty"`
}

// Followers lists the official account's users, followers or not, by
// openid.
func (e *Emulator) Followers(appid string) []Follower {
	a := e.officialApp("Followers", appid)
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]Follower, 0, len(a.users))
	for id, u := range a.users {
		out = append(out, Follower{OpenID: id, UnionID: u.unionid, Following: u.following, Refusing: u.refusing})
	}
	sort.Slice(out, func(i, j int) bool { return strings.Compare(out[i].OpenID, out[j].OpenID) < 0 })
	return out
}
