package wechat

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Push body formats, as configured in the Mini Program console (数据格式).
const (
	FormatJSON = "json"
	FormatXML  = "xml"
)

// Push encryption modes (消息加解密方式).
const (
	ModePlaintext  = "plaintext"
	ModeCompatible = "compatible"
	ModeSafe       = "safe"
)

// The subscribe-message events (MsgType "event"). An official account's
// subscription notifications (订阅通知) push the same three, with the same
// shapes; their PopupScene is "1" (an H5 page) or "2" (an article)
// (https://developers.weixin.qq.com/doc/service/guide/product/subscription_messages/push.html).
const (
	EventSubscribePopup  = "subscribe_msg_popup_event"
	EventSubscribeChange = "subscribe_msg_change_event"
	EventSubscribeSent   = "subscribe_msg_sent_event"
)

// The official account events (MsgType "event"). "subscribe" and
// "unsubscribe" are following and unfollowing the account, not subscribe
// messages: FromUserName is the user's openid in the account, and a follow
// through a QR code with a scene carries EventKey "qrscene_<scene>" and the
// code's Ticket
// (https://developers.weixin.qq.com/doc/offiaccount/Message_Management/Receiving_event_pushes.html,
// read through verbatim copies). TEMPLATESENDJOBFINISH is a template
// message's delivery receipt: MsgID and Status
// (https://developers.weixin.qq.com/doc/offiaccount/Message_Management/Template_Message_Interface.html).
const (
	EventFollow                = "subscribe"
	EventUnfollow              = "unsubscribe"
	EventTemplateSendJobFinish = "TEMPLATESENDJOBFINISH"
)

// Status values of TEMPLATESENDJOBFINISH, exactly as WeChat spells them
// (the space in the last one is WeChat's). Other "failed:..." values occur
// in the wild ("failed:freq limit", reported on the community forum) and
// are kept as they come.
const (
	TemplateStatusSuccess      = "success"
	TemplateStatusUserBlock    = "failed:user block"     // the user refuses the account's messages
	TemplateStatusSystemFailed = "failed: system failed" // any other reason
)

// qrScenePrefix starts the EventKey of a follow through a QR code.
const qrScenePrefix = "qrscene_"

// ErrMalformedPush: a push body (or the message decrypted from it) is not a
// WeChat message: not XML or JSON, wrong value types, missing fields.
var ErrMalformedPush = errors.New("wechat push: malformed message")

// Push is one verified, decrypted, parsed push.
type Push struct {
	ToUserName, FromUserName string
	CreateTime               int64
	MsgType, Event           string
	// MsgID is the MsgId of an ordinary (non-event) message, or the MsgID
	// of a TEMPLATESENDJOBFINISH, exact decimal.
	MsgID string

	Subscriptions []SubscriptionEvent // popup and change events
	Sent          []SentEvent         // subscribe_msg_sent_event
	// Follow is set for an official account's subscribe and unsubscribe
	// events.
	Follow *FollowEvent
	// TemplateJob is set for TEMPLATESENDJOBFINISH.
	TemplateJob *TemplateJobEvent

	Format string // FormatJSON or FormatXML
	Mode   string // ModePlaintext, ModeCompatible or ModeSafe; empty from ParsePush
	Raw    []byte // the (decrypted) message body
}

// SubscriptionEvent is one template's entry in a popup or change event.
type SubscriptionEvent struct {
	TemplateID string
	Status     string // accept | reject, as WeChat sends it
	PopupScene string // popup events only; "0" = inside a Mini Program page
}

// FollowEvent is a user following (subscribe) or unfollowing
// (unsubscribe) an official account; Push.FromUserName is their openid in
// the account.
type FollowEvent struct {
	Following bool
	// EventKey is as WeChat sent it: "qrscene_123" for a follow through a
	// QR code with a scene, often "" otherwise.
	EventKey string
	// Ticket is the QR code's ticket, for a follow through one.
	Ticket string
}

// QRScene is the scene of the QR code the user followed through ("123" of
// "qrscene_123"), if any.
func (f FollowEvent) QRScene() (string, bool) {
	if !f.Following || !strings.HasPrefix(f.EventKey, qrScenePrefix) {
		return "", false
	}
	return strings.TrimPrefix(f.EventKey, qrScenePrefix), true
}

// TemplateJobEvent is the delivery receipt of one template message.
type TemplateJobEvent struct {
	MsgID  string // exact decimal, as SendTemplate returned it
	Status string // TemplateStatusSuccess, TemplateStatusUserBlock, ...
}

// Delivered reports whether the message reached the user.
func (e TemplateJobEvent) Delivered() bool { return e.Status == TemplateStatusSuccess }

// SentEvent is the final delivery result of one subscribe message.
type SentEvent struct {
	TemplateID  string
	MsgID       string // exact decimal: msgids exceed 2^53, so never a float
	ErrorCode   int
	ErrorStatus string
}

// maxDedupeKey keeps keys well under bbolt's 32 KiB key limit and cheap to
// store; longer ones keep a readable prefix and a hash of the whole.
const maxDedupeKey = 512

// DedupeKey identifies a push across WeChat's retries, which repeat the
// message unchanged: FromUserName + CreateTime + Event (WeChat's own advice
// for events), plus the MsgId, template ids, statuses and msgids it carries,
// so that two different pushes in the same second stay apart. A message
// without sender and time (never sent by WeChat) is keyed by its content.
func (p *Push) DedupeKey() string {
	if p.FromUserName == "" && p.CreateTime == 0 {
		sum := sha256.Sum256(p.Raw)
		return "raw|" + hex.EncodeToString(sum[:16])
	}
	kind := p.Event
	if kind == "" {
		kind = p.MsgType
	}
	var b strings.Builder
	b.WriteString(p.FromUserName)
	b.WriteByte('|')
	b.WriteString(strconv.FormatInt(p.CreateTime, 10))
	b.WriteByte('|')
	b.WriteString(kind)
	if p.MsgID != "" {
		b.WriteByte('|')
		b.WriteString(p.MsgID)
	}
	// Sorted, so the key does not depend on the order WeChat lists them in.
	var items []string
	for _, s := range p.Subscriptions {
		items = append(items, s.TemplateID+":"+s.Status)
	}
	for _, s := range p.Sent {
		items = append(items, s.TemplateID+":"+s.MsgID)
	}
	slices.Sort(items)
	for _, it := range items {
		b.WriteByte('|')
		b.WriteString(it)
	}
	key := b.String()
	if len(key) > maxDedupeKey {
		sum := sha256.Sum256([]byte(key))
		cut := maxDedupeKey - 33
		for cut > 0 && !utf8.RuneStart(key[cut]) {
			cut--
		}
		key = key[:cut] + "#" + hex.EncodeToString(sum[:16])
	}
	return key
}

// ParsePush parses one plaintext (or already decrypted) push message.
// format is FormatJSON, FormatXML or "" to detect it from the first
// non-space byte. It accepts the shapes WeChat and its docs actually use:
// List as an object or an array, numbers as strings or numbers, the XML
// change event under either wrapper, the old JSON wrapper keys in place of
// "List". Unknown MsgTypes and Events parse without error (only the common
// fields are filled). p.Raw is body, not a copy.
func ParsePush(body []byte, format string) (*Push, error) {
	if format == "" {
		var err error
		if format, err = detectFormat(body); err != nil {
			return nil, err
		}
	}
	var (
		f   pushFields
		err error
	)
	text := bytes.TrimPrefix(body, utf8BOM)
	switch format {
	case FormatJSON:
		f, err = parseJSONFields(text)
	case FormatXML:
		f, err = parseXMLFields(text)
	default:
		return nil, fmt.Errorf("parse push: unknown format %q", format)
	}
	if err != nil {
		return nil, fmt.Errorf("parse %s push: %w: %w", format, ErrMalformedPush, err)
	}
	p, err := f.push()
	if err != nil {
		return nil, fmt.Errorf("parse %s push: %w: %w", format, ErrMalformedPush, err)
	}
	p.Format = format
	p.Raw = body
	return p, nil
}

var utf8BOM = []byte("\xef\xbb\xbf")

// detectFormat looks at the first byte after a BOM and white space: WeChat
// sends exactly one format per app, and the two cannot be confused. The
// Content-Type is not consulted because it adds nothing this does not know.
func detectFormat(body []byte) (string, error) {
	b := bytes.TrimLeft(bytes.TrimPrefix(body, utf8BOM), " \t\r\n")
	switch {
	case len(b) == 0:
		return "", fmt.Errorf("detect push format: %w: empty body", ErrMalformedPush)
	case b[0] == '<':
		return FormatXML, nil
	case b[0] == '{':
		return FormatJSON, nil
	}
	return "", fmt.Errorf("detect push format: %w: neither XML nor a JSON object", ErrMalformedPush)
}

// pushFields is a message as text, whatever its format; push() types it.
type pushFields struct {
	to, from, createTime, msgType, event, msgID string
	eventKey, ticket, status                    string
	items                                       []itemFields
}

type itemFields struct {
	templateID, status, popupScene, msgID, errorCode, errorStatus string
}

func (f pushFields) push() (*Push, error) {
	p := &Push{
		ToUserName:   f.to,
		FromUserName: f.from,
		MsgType:      f.msgType,
		Event:        f.event,
		MsgID:        f.msgID,
	}
	if p.MsgType == "" {
		return nil, errors.New("no MsgType")
	}
	if f.createTime != "" {
		t, err := strconv.ParseInt(f.createTime, 10, 64)
		if err != nil {
			return nil, errors.New("CreateTime is not an integer")
		}
		p.CreateTime = t
	}
	if p.MsgType != "event" {
		return p, nil
	}
	switch p.Event {
	case EventFollow, EventUnfollow:
		p.Follow = &FollowEvent{Following: p.Event == EventFollow, EventKey: f.eventKey, Ticket: f.ticket}
	case EventTemplateSendJobFinish:
		if p.MsgID == "" {
			return nil, fmt.Errorf("%s has no MsgID", p.Event)
		}
		p.TemplateJob = &TemplateJobEvent{MsgID: p.MsgID, Status: f.status}
	case EventSubscribePopup, EventSubscribeChange:
		for i, it := range f.items {
			if it.templateID == "" {
				return nil, fmt.Errorf("%s entry %d has no TemplateId", p.Event, i)
			}
			p.Subscriptions = append(p.Subscriptions, SubscriptionEvent{
				TemplateID: it.templateID,
				Status:     it.status,
				PopupScene: it.popupScene,
			})
		}
	case EventSubscribeSent:
		for i, it := range f.items {
			if it.templateID == "" || it.msgID == "" {
				return nil, fmt.Errorf("%s entry %d lacks TemplateId or MsgID", p.Event, i)
			}
			code := 0
			if it.errorCode != "" {
				c, err := strconv.Atoi(it.errorCode)
				if err != nil {
					return nil, fmt.Errorf("%s entry %d: ErrorCode is not an integer", p.Event, i)
				}
				code = c
			}
			p.Sent = append(p.Sent, SentEvent{
				TemplateID:  it.templateID,
				MsgID:       it.msgID,
				ErrorCode:   code,
				ErrorStatus: it.errorStatus,
			})
		}
	}
	return p, nil
}

// ---- JSON ----

// looseString takes a JSON string, number or boolean as text. Numbers keep
// their literal spelling, which is what keeps a MsgID above 2^53 exact.
type looseString string

func (s *looseString) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) == 0 || string(b) == "null":
		*s = ""
	case b[0] == '"':
		var v string
		if err := json.Unmarshal(b, &v); err != nil {
			return err
		}
		*s = looseString(strings.TrimSpace(v))
	case b[0] == '{' || b[0] == '[':
		return errors.New("want a string or a number, got an object or array")
	default:
		*s = looseString(b)
	}
	return nil
}

func (s looseString) String() string { return string(s) }

type jsonPush struct {
	ToUserName   looseString
	FromUserName looseString
	CreateTime   looseString
	MsgType      looseString
	Event        looseString
	MsgID        looseString `json:"MsgId"`
	EventKey     looseString
	Ticket       looseString
	Status       looseString
	List         json.RawMessage
	// Keys an older doc revision printed in place of "List".
	PopupList  json.RawMessage `json:"SubscribeMsgPopupEvent"`
	ChangeList json.RawMessage `json:"SubscribeMsgChangeEvent"`
	SentList   json.RawMessage `json:"SubscribeMsgSentEvent"`
}

type jsonItem struct {
	TemplateID            looseString `json:"TemplateId"`
	SubscribeStatusString looseString
	PopupScene            looseString
	MsgID                 looseString
	ErrorCode             looseString
	ErrorStatus           looseString
}

func parseJSONFields(body []byte) (pushFields, error) {
	var j jsonPush
	// encoding/json matches keys case-insensitively, which also covers
	// MsgId/MsgID and TemplateId/TemplateID spellings.
	if err := json.Unmarshal(body, &j); err != nil {
		return pushFields{}, err
	}
	f := pushFields{
		to:         j.ToUserName.String(),
		from:       j.FromUserName.String(),
		createTime: j.CreateTime.String(),
		msgType:    j.MsgType.String(),
		event:      j.Event.String(),
		msgID:      j.MsgID.String(),
		eventKey:   j.EventKey.String(),
		ticket:     j.Ticket.String(),
		status:     j.Status.String(),
	}
	list := j.List
	for _, alt := range []json.RawMessage{j.PopupList, j.ChangeList, j.SentList} {
		if isJSONAbsent(list) {
			list = alt
		}
	}
	raws, err := jsonListItems(list, 0)
	if err != nil {
		return pushFields{}, err
	}
	for _, raw := range raws {
		var it jsonItem
		if err := json.Unmarshal(raw, &it); err != nil {
			return pushFields{}, fmt.Errorf("List entry: %w", err)
		}
		f.items = append(f.items, itemFields{
			templateID:  it.TemplateID.String(),
			status:      it.SubscribeStatusString.String(),
			popupScene:  it.PopupScene.String(),
			msgID:       it.MsgID.String(),
			errorCode:   it.ErrorCode.String(),
			errorStatus: it.ErrorStatus.String(),
		})
	}
	return f, nil
}

func isJSONAbsent(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) == 0 || string(t) == "null"
}

// jsonListItems returns the entries of a List value: one object when WeChat
// sends a single entry, an array when it sends several, and, for the old
// wrapper keys, possibly an object that holds a "List" itself (the XML shape).
func jsonListItems(raw json.RawMessage, depth int) ([]json.RawMessage, error) {
	t := bytes.TrimSpace(raw)
	if isJSONAbsent(t) {
		return nil, nil
	}
	switch t[0] {
	case '[':
		var arr []json.RawMessage
		if err := json.Unmarshal(t, &arr); err != nil {
			return nil, fmt.Errorf("List: %w", err)
		}
		var out []json.RawMessage
		for _, e := range arr {
			if isJSONAbsent(e) {
				continue
			}
			if bytes.TrimSpace(e)[0] != '{' {
				return nil, errors.New("List entry is not an object")
			}
			out = append(out, e)
		}
		return out, nil
	case '{':
		if depth == 0 {
			var obj map[string]json.RawMessage
			if err := json.Unmarshal(t, &obj); err != nil {
				return nil, fmt.Errorf("List: %w", err)
			}
			for k, v := range obj {
				if strings.EqualFold(k, "List") {
					return jsonListItems(v, depth+1)
				}
			}
		}
		return []json.RawMessage{t}, nil
	}
	return nil, errors.New("List is neither an object nor an array")
}

// ---- XML ----

type xmlPush struct {
	ToUserName   string
	FromUserName string
	CreateTime   string
	MsgType      string
	Event        string
	MsgID        string `xml:"MsgId"`
	MsgIDUpper   string `xml:"MsgID"`
	EventKey     string
	Ticket       string
	Status       string
	Popup        xmlWrapper `xml:"SubscribeMsgPopupEvent"`
	Change       xmlWrapper `xml:"SubscribeMsgChangeEvent"`
	Sent         xmlWrapper `xml:"SubscribeMsgSentEvent"`
	List         []xmlItem  `xml:"List"` // unwrapped, in case
}

type xmlWrapper struct {
	List []xmlItem `xml:"List"`
}

type xmlItem struct {
	TemplateID            string `xml:"TemplateId"`
	TemplateIDUpper       string `xml:"TemplateID"`
	SubscribeStatusString string
	PopupScene            string
	MsgID                 string `xml:"MsgID"`
	MsgIDLower            string `xml:"MsgId"`
	ErrorCode             string
	ErrorStatus           string
}

func parseXMLFields(body []byte) (pushFields, error) {
	var x xmlPush
	// encoding/xml neither fetches external entities nor expands custom
	// ones, and the body size is bounded by the caller.
	if err := xml.Unmarshal(body, &x); err != nil {
		return pushFields{}, err
	}
	f := pushFields{
		to:         strings.TrimSpace(x.ToUserName),
		from:       strings.TrimSpace(x.FromUserName),
		createTime: strings.TrimSpace(x.CreateTime),
		msgType:    strings.TrimSpace(x.MsgType),
		event:      strings.TrimSpace(x.Event),
		msgID:      firstNonEmpty(x.MsgID, x.MsgIDUpper),
		eventKey:   strings.TrimSpace(x.EventKey),
		ticket:     strings.TrimSpace(x.Ticket),
		status:     strings.TrimSpace(x.Status),
	}
	// All wrappers are read: the OA doc put the change event under
	// SubscribeMsgPopupEvent, and a message only ever carries one of them.
	var items []xmlItem
	items = append(items, x.Popup.List...)
	items = append(items, x.Change.List...)
	items = append(items, x.Sent.List...)
	items = append(items, x.List...)
	for _, it := range items {
		f.items = append(f.items, itemFields{
			templateID:  firstNonEmpty(it.TemplateID, it.TemplateIDUpper),
			status:      strings.TrimSpace(it.SubscribeStatusString),
			popupScene:  strings.TrimSpace(it.PopupScene),
			msgID:       firstNonEmpty(it.MsgID, it.MsgIDLower),
			errorCode:   strings.TrimSpace(it.ErrorCode),
			errorStatus: strings.TrimSpace(it.ErrorStatus),
		})
	}
	return f, nil
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v = strings.TrimSpace(v); v != "" {
			return v
		}
	}
	return ""
}

// ---- envelope (compatible and safe modes) ----

// pushEnvelope is the outer body of an encrypted push: the Encrypt field,
// and in compatible mode an unsigned plaintext copy of the message.
type pushEnvelope struct {
	Encrypt string
	copy    pushFields // the plaintext copy's header fields, if any
}

func (e pushEnvelope) hasPlaintextCopy() bool {
	return e.copy.msgType != "" || e.copy.from != ""
}

func parseEnvelope(body []byte) (pushEnvelope, string, error) {
	format, err := detectFormat(body)
	if err != nil {
		return pushEnvelope{}, "", err
	}
	var env pushEnvelope
	body = bytes.TrimPrefix(body, utf8BOM)
	switch format {
	case FormatJSON:
		// The plaintext copy is only compared, never used: odd values in it
		// must not cost the message, so they are read as raw JSON.
		var j struct {
			Encrypt                                  looseString
			FromUserName, CreateTime, MsgType, Event json.RawMessage
		}
		if err := json.Unmarshal(body, &j); err != nil {
			return env, format, fmt.Errorf("parse json envelope: %w: %w", ErrMalformedPush, err)
		}
		env.Encrypt = j.Encrypt.String()
		env.copy = pushFields{from: lenientString(j.FromUserName), createTime: lenientString(j.CreateTime),
			msgType: lenientString(j.MsgType), event: lenientString(j.Event)}
	case FormatXML:
		var x struct {
			Encrypt      string
			FromUserName string
			CreateTime   string
			MsgType      string
			Event        string
		}
		if err := xml.Unmarshal(body, &x); err != nil {
			return env, format, fmt.Errorf("parse xml envelope: %w: %w", ErrMalformedPush, err)
		}
		env.Encrypt = strings.TrimSpace(x.Encrypt)
		env.copy = pushFields{from: strings.TrimSpace(x.FromUserName), createTime: strings.TrimSpace(x.CreateTime),
			msgType: strings.TrimSpace(x.MsgType), event: strings.TrimSpace(x.Event)}
	}
	if env.Encrypt == "" {
		return env, format, fmt.Errorf("parse %s envelope: %w: no Encrypt field", format, ErrMalformedPush)
	}
	return env, format, nil
}

func lenientString(raw json.RawMessage) string {
	var s looseString
	if len(raw) == 0 || json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s.String()
}

// disagrees reports whether the compatible-mode plaintext copy contradicts
// the decrypted message. The copy is not covered by msg_signature, so it is
// never used; a contradiction is only worth a warning (tampering on the way).
func (e pushEnvelope) disagrees(p *Push) bool {
	c := e.copy
	if c.from != "" && c.from != p.FromUserName ||
		c.msgType != "" && c.msgType != p.MsgType ||
		c.event != "" && c.event != p.Event {
		return true
	}
	if c.createTime != "" && c.createTime != strconv.FormatInt(p.CreateTime, 10) {
		return true
	}
	return false
}
