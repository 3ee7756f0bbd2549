package wechat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// The official account (服务号) APIs. An official account is an app like a
// Mini Program: the same token endpoints, per appid (SetApp), and the same
// callWithToken; only the paths differ.
const (
	pathTemplateSend  = "/cgi-bin/message/template/send"
	pathBizSend       = "/cgi-bin/message/subscribe/bizsend"
	pathUserInfo      = "/cgi-bin/user/info"
	pathUserInfoBatch = "/cgi-bin/user/info/batchget"
	pathUserList      = "/cgi-bin/user/get"
)

// MaxUserInfoBatch is how many openids one /cgi-bin/user/info/batchget
// takes: "最多支持一次拉取100条"
// (https://developers.weixin.qq.com/doc/service/api/usermanage/userinfo/api_batchuserinfo.html).
const MaxUserInfoBatch = 100

// MaxClientMsgID is the longest client_msg_id wxbridge sends. The template
// message docs give no limit; the mass-send docs give 64 bytes for their
// clientmsgid (45067 beyond), and the emulator holds template messages to
// the same, so a longer idempotency key must be shortened (hashed) first.
const MaxClientMsgID = 64

// MiniProgram is the mini program page a card of an official account opens:
// "所需跳转到的小程序appid（该小程序appid必须与发模板消息的公众号是绑定关联关系）"
// and "pagepath … 支持带参数,（示例index?foo=bar）"
// (https://developers.weixin.qq.com/doc/offiaccount/Message_Management/Template_Message_Interface.html).
type MiniProgram struct {
	AppID    string `json:"appid"`
	PagePath string `json:"pagepath,omitempty"`
}

// TemplateMessage is one template message (模板消息) of an official
// account, POST /cgi-bin/message/template/send
// (https://developers.weixin.qq.com/doc/service/api/notify/template/api_sendtemplatemessage.html).
// The user must follow the account (else 43004, ErrNotFollowing); no
// per-message consent is needed.
type TemplateMessage struct {
	// ToUser is the user's openid in the official account, which is not
	// their Mini Program openid: the unionid links the two.
	ToUser     string
	TemplateID string
	// URL is the web page the card opens. Optional. With MiniProgram as
	// well, WeChat opens the mini program and falls back to the URL on
	// clients too old for it.
	URL string
	// MiniProgram, when its AppID is set, is the page the card opens.
	MiniProgram MiniProgram
	// ClientMsgID makes WeChat refuse a repeat: "对于同一个openid +
	// client_msg_id, 只发送一条消息,10分钟有效,超过10分钟不保证效果"
	// (quoted from the template message docs by
	// https://github.com/silenceper/wechat/pull/651). At most
	// MaxClientMsgID bytes. Optional.
	ClientMsgID string
	// Data maps keyword keys ("thing2") to values.
	Data map[string]string
}

type templateBody struct {
	ToUser      string                  `json:"touser"`
	TemplateID  string                  `json:"template_id"`
	URL         string                  `json:"url,omitempty"`
	MiniProgram *MiniProgram            `json:"miniprogram,omitempty"`
	ClientMsgID string                  `json:"client_msg_id,omitempty"`
	Data        map[string]keywordValue `json:"data"`
}

func keywordValues(data map[string]string) map[string]keywordValue {
	out := make(map[string]keywordValue, len(data))
	for k, v := range data {
		out[k] = keywordValue{Value: v}
	}
	return out
}

func (m MiniProgram) orNil() *MiniProgram {
	if m.AppID == "" {
		return nil
	}
	return &m
}

// SendTemplate sends one template message and returns WeChat's msgid as a
// decimal string; the TEMPLATESENDJOBFINISH push names it
// (Push.TemplateJob). A repeat of a ClientMsgID WeChat still remembers
// returns the earlier message's msgid (or "" when WeChat does not name it)
// together with an error matching ErrAlreadySent: the message went out
// once, before.
func (c *Client) SendTemplate(ctx context.Context, app string, m TemplateMessage) (string, error) {
	body := templateBody{ToUser: m.ToUser, TemplateID: m.TemplateID, URL: m.URL, MiniProgram: m.MiniProgram.orNil(),
		ClientMsgID: m.ClientMsgID, Data: keywordValues(m.Data)}
	what := fmt.Sprintf("app %s: send template message %s to %s", app, m.TemplateID, m.ToUser)
	msgid, err := c.sendJSON(ctx, app, pathTemplateSend, body, what)
	if errors.Is(err, ErrAlreadySent) {
		var api *APIError
		if errors.As(err, &api) {
			return api.MsgID, err
		}
	}
	return msgid, err
}

// BizMessage is one subscription notification (订阅通知) of an official
// account, POST /cgi-bin/message/subscribe/bizsend
// (https://developers.weixin.qq.com/doc/service/api/notify/notify/api_sendnewsubscribemsg.html).
// Like a Mini Program subscribe message it needs a credit (one-time or
// long-term) the user gave in a popup, else 43101; it reaches followers
// in the account and others in 服务通知
// (https://developers.weixin.qq.com/doc/service/Subscription_Messages/intro.html).
type BizMessage struct {
	ToUser     string // the user's openid in the official account
	TemplateID string
	// Page is the web page the card opens ("跳转网页时填写" in the older
	// official account doc, Subscription_Messages/api.html). Optional.
	Page string
	// MiniProgram, when its AppID is set, is the mini program page the card
	// opens; WeChat prefers it to Page.
	MiniProgram MiniProgram
	Data        map[string]string
}

type bizBody struct {
	ToUser      string                  `json:"touser"`
	TemplateID  string                  `json:"template_id"`
	Page        string                  `json:"page,omitempty"`
	MiniProgram *MiniProgram            `json:"miniprogram,omitempty"`
	Data        map[string]keywordValue `json:"data"`
}

// SendBizSubscribe sends one subscription notification and returns its
// msgid ("" when WeChat answers without one); subscribe_msg_sent_event
// reports its delivery, as for a Mini Program.
func (c *Client) SendBizSubscribe(ctx context.Context, app string, m BizMessage) (string, error) {
	body := bizBody{ToUser: m.ToUser, TemplateID: m.TemplateID, Page: m.Page, MiniProgram: m.MiniProgram.orNil(),
		Data: keywordValues(m.Data)}
	return c.sendJSON(ctx, app, pathBizSend, body,
		fmt.Sprintf("app %s: send subscription notification %s to %s", app, m.TemplateID, m.ToUser))
}

// sendJSON posts body to path and reads the msgid of the answer.
func (c *Client) sendJSON(ctx context.Context, app, path string, body any, what string) (string, error) {
	payload, err := json.Marshal(body)
	if err != nil {
		return "", fmt.Errorf("%s: encode: %w", what, err)
	}
	data, err := c.callWithToken(ctx, app, http.MethodPost, path, payload)
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	var out struct {
		// looseString keeps a msgid above 2^53 exact, number or string.
		MsgID looseString `json:"msgid"`
	}
	if err := json.Unmarshal(data, &out); err != nil {
		// Sent (errcode 0); only the msgid is unreadable.
		return "", fmt.Errorf("%s: read msgid: %w", what, err)
	}
	return out.MsgID.String(), nil
}

// UserInfo is what an official account knows of one of its users
// (获取用户基本信息, GET /cgi-bin/user/info,
// https://developers.weixin.qq.com/doc/offiaccount/User_Management/Get_users_basic_information_UnionID.html).
type UserInfo struct {
	OpenID string
	// Subscribed: the user follows the account. When they do not, WeChat
	// promises nothing more ("值为0时，代表此用户没有关注该公众号，拉取不到其余信息"),
	// so UnionID is usually "" then.
	Subscribed bool
	// UnionID links the user's openids across the apps of one open
	// platform account: "只有在用户将公众号绑定到微信开放平台账号后，才会出现该
	// 字段". Kept whenever WeChat gives it.
	UnionID string
	// SubscribedAt is when the user (last) followed; zero if unknown.
	SubscribedAt time.Time
	// SubscribeScene is how they followed (ADD_SCENE_QR_CODE...).
	SubscribeScene string
}

type userInfoJSON struct {
	Subscribe      looseString `json:"subscribe"`
	OpenID         string      `json:"openid"`
	UnionID        string      `json:"unionid"`
	SubscribeTime  looseString `json:"subscribe_time"`
	SubscribeScene string      `json:"subscribe_scene"`
}

func (u userInfoJSON) info() UserInfo {
	// The doc's own example has a space before its unionid.
	out := UserInfo{OpenID: u.OpenID, Subscribed: u.Subscribe == "1", UnionID: strings.TrimSpace(u.UnionID),
		SubscribeScene: u.SubscribeScene}
	if sec, err := strconv.ParseInt(u.SubscribeTime.String(), 10, 64); err == nil && sec > 0 {
		out.SubscribedAt = time.Unix(sec, 0)
	}
	return out
}

// UserInfo asks the official account about one openid. An openid that is
// not the account's is an error matching ErrInvalidOpenID; one that does
// not (or no longer) follow is Subscribed false, not an error.
func (c *Client) UserInfo(ctx context.Context, app, openid string) (UserInfo, error) {
	q := url.Values{"openid": {openid}, "lang": {"zh_CN"}}
	data, err := c.callWithTokenQuery(ctx, app, http.MethodGet, pathUserInfo, q, nil)
	if err != nil {
		return UserInfo{}, fmt.Errorf("app %s: user info of %s: %w", app, openid, err)
	}
	var out userInfoJSON
	if err := json.Unmarshal(data, &out); err != nil {
		return UserInfo{}, fmt.Errorf("app %s: user info of %s: read answer: %w", app, openid, err)
	}
	if out.OpenID == "" {
		out.OpenID = openid
	}
	return out.info(), nil
}

// UserInfoBatch asks about many openids, MaxUserInfoBatch to a call
// (POST /cgi-bin/user/info/batchget,
// https://developers.weixin.qq.com/doc/service/api/usermanage/userinfo/api_batchuserinfo.html),
// and returns what WeChat said of each, in the order given.
//
// WeChat refuses a whole call for one openid it does not know (40003); such
// a batch is asked again one openid at a time, so one stray openid costs
// only itself. The openids refused that way are left out of the result and
// named in an error matching ErrInvalidOpenID, returned with the rest.
// Any other failure ends the call with what was learnt so far.
func (c *Client) UserInfoBatch(ctx context.Context, app string, openids []string) ([]UserInfo, error) {
	out := make([]UserInfo, 0, len(openids))
	var invalid []string
	for start := 0; start < len(openids); start += MaxUserInfoBatch {
		chunk := openids[start:min(start+MaxUserInfoBatch, len(openids))]
		infos, err := c.userInfoBatch(ctx, app, chunk)
		if errors.Is(err, ErrInvalidOpenID) && len(chunk) > 1 {
			for _, id := range chunk {
				info, err := c.UserInfo(ctx, app, id)
				switch {
				case errors.Is(err, ErrInvalidOpenID):
					invalid = append(invalid, id)
				case err != nil:
					return out, err
				default:
					out = append(out, info)
				}
			}
			continue
		}
		if errors.Is(err, ErrInvalidOpenID) {
			invalid = append(invalid, chunk...)
			continue
		}
		if err != nil {
			return out, err
		}
		out = append(out, infos...)
	}
	if len(invalid) > 0 {
		return out, fmt.Errorf("app %s: user info: %w: %s", app, ErrInvalidOpenID, strings.Join(invalid, ", "))
	}
	return out, nil
}

func (c *Client) userInfoBatch(ctx context.Context, app string, openids []string) ([]UserInfo, error) {
	type item struct {
		OpenID string `json:"openid"`
		Lang   string `json:"lang"`
	}
	req := struct {
		UserList []item `json:"user_list"`
	}{make([]item, len(openids))}
	for i, id := range openids {
		req.UserList[i] = item{id, "zh_CN"}
	}
	payload, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("app %s: user info of %d users: encode: %w", app, len(openids), err)
	}
	data, err := c.callWithToken(ctx, app, http.MethodPost, pathUserInfoBatch, payload)
	if err != nil {
		return nil, fmt.Errorf("app %s: user info of %d users: %w", app, len(openids), err)
	}
	var out struct {
		List []userInfoJSON `json:"user_info_list"`
	}
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("app %s: user info of %d users: read answer: %w", app, len(openids), err)
	}
	// Keyed by openid: the answer's order is not documented.
	byID := make(map[string]UserInfo, len(out.List))
	for _, u := range out.List {
		byID[u.OpenID] = u.info()
	}
	infos := make([]UserInfo, 0, len(openids))
	for _, id := range openids {
		if u, ok := byID[id]; ok {
			infos = append(infos, u)
		}
	}
	return infos, nil
}

// FollowerPage is one page of an official account's followers.
type FollowerPage struct {
	// Total is how many follow the account.
	Total   int
	OpenIDs []string
	// Next is where the following page starts; "" after the last page.
	Next string
}

// Followers lists a page of the official account's followers, starting
// after the openid next ("" for the first page): GET /cgi-bin/user/get
// (https://developers.weixin.qq.com/doc/offiaccount/User_Management/Getting_a_User_List.html),
// up to 10,000 openids a page. Next is "" once the list is complete, and
// also when WeChat repeats the openid it was given (the walk would not
// move on).
func (c *Client) Followers(ctx context.Context, app, next string) (FollowerPage, error) {
	q := url.Values{}
	if next != "" {
		q.Set("next_openid", next)
	}
	data, err := c.callWithTokenQuery(ctx, app, http.MethodGet, pathUserList, q, nil)
	if err != nil {
		return FollowerPage{}, fmt.Errorf("app %s: followers after %q: %w", app, next, err)
	}
	var out struct {
		Total int `json:"total"`
		Data  struct {
			OpenID []string `json:"openid"`
		} `json:"data"`
		NextOpenID string `json:"next_openid"`
	}
	if err := json.Unmarshal(data, &out); err != nil {
		return FollowerPage{}, fmt.Errorf("app %s: followers after %q: read answer: %w", app, next, err)
	}
	page := FollowerPage{Total: out.Total, Next: out.NextOpenID}
	for _, id := range out.Data.OpenID {
		// Older pages of the doc show an empty first openid.
		if id != "" {
			page.OpenIDs = append(page.OpenIDs, id)
		}
	}
	if len(page.OpenIDs) == 0 || page.Next == next {
		page.Next = ""
	}
	return page, nil
}
