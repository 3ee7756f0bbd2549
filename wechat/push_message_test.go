package wechat_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/wxbridge/wxbridge/wechat"
)

// The shapes of reference/wechat-api.md §6, official and as seen in the wild.
func TestParsePush(t *testing.T) {
	tests := []struct {
		name   string
		body   string
		format string // expected detected format
		want   wechat.Push
	}{
		{
			name:   "popup, official XML, two entries",
			format: wechat.FormatXML,
			body: `<xml>
    <ToUserName><![CDATA[gh_123456789abc]]></ToUserName>
    <FromUserName><![CDATA[otFpruAK8D-E6EfStSYonYSBZ8_4]]></FromUserName>
    <CreateTime>1610969440</CreateTime>
    <MsgType><![CDATA[event]]></MsgType>
    <Event><![CDATA[subscribe_msg_popup_event]]></Event>
    <SubscribeMsgPopupEvent>
        <List>
            <TemplateId><![CDATA[VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc]]></TemplateId>
            <SubscribeStatusString><![CDATA[accept]]></SubscribeStatusString>
            <PopupScene>2</PopupScene>
        </List>
        <List>
            <TemplateId><![CDATA[9nLIlbOQZC5Y89AZteFEux3WCXRRRG5Wfzkpssu4bLI]]></TemplateId>
            <SubscribeStatusString><![CDATA[reject]]></SubscribeStatusString>
            <PopupScene>2</PopupScene>
        </List>
    </SubscribeMsgPopupEvent>
</xml>`,
			want: wechat.Push{ToUserName: "gh_123456789abc", FromUserName: "otFpruAK8D-E6EfStSYonYSBZ8_4", CreateTime: 1610969440,
				MsgType: "event", Event: wechat.EventSubscribePopup,
				Subscriptions: []wechat.SubscriptionEvent{
					{TemplateID: "VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc", Status: "accept", PopupScene: "2"},
					{TemplateID: "9nLIlbOQZC5Y89AZteFEux3WCXRRRG5Wfzkpssu4bLI", Status: "reject", PopupScene: "2"},
				}},
		},
		{
			name:   "popup, official JSON: CreateTime and PopupScene strings, List array of one",
			format: wechat.FormatJSON,
			body: `{
  "ToUserName": "gh_123456789abc",
  "FromUserName": "o7esq5OI1Uej6Xixw1lA2H7XDVbc",
  "CreateTime": "1620973045",
  "MsgType": "event",
  "Event": "subscribe_msg_popup_event",
  "List": [ {
        "TemplateId": "hD-ixGOhYmUfjOnI8MCzQMPshzGVeux_2vzyvQu7O68",
        "SubscribeStatusString": "accept",
        "PopupScene": "0"
    }]
}`,
			want: wechat.Push{ToUserName: "gh_123456789abc", FromUserName: "o7esq5OI1Uej6Xixw1lA2H7XDVbc", CreateTime: 1620973045,
				MsgType: "event", Event: wechat.EventSubscribePopup,
				Subscriptions: []wechat.SubscriptionEvent{{TemplateID: "hD-ixGOhYmUfjOnI8MCzQMPshzGVeux_2vzyvQu7O68", Status: "accept", PopupScene: "0"}}},
		},
		{
			name:   "popup, real JSON: one entry as an object, CreateTime a number",
			format: wechat.FormatJSON,
			body:   `{"CreateTime":1688953684,"Event":"subscribe_msg_popup_event","FromUserName":"o8dH44seYM3qeBzHlrmwI0sAtSfI","List":{"PopupScene":"0","SubscribeStatusString":"accept","TemplateId":"BDcgTGpwt7fcRVFhGh-NvjcASaWWmkwzN3y_6mXzJR4"},"MsgType":"event","ToUserName":"gh_xxxxxxxxxx"}`,
			want: wechat.Push{ToUserName: "gh_xxxxxxxxxx", FromUserName: "o8dH44seYM3qeBzHlrmwI0sAtSfI", CreateTime: 1688953684,
				MsgType: "event", Event: wechat.EventSubscribePopup,
				Subscriptions: []wechat.SubscriptionEvent{{TemplateID: "BDcgTGpwt7fcRVFhGh-NvjcASaWWmkwzN3y_6mXzJR4", Status: "accept", PopupScene: "0"}}},
		},
		{
			name:   "popup, JSON, PopupScene a number",
			format: wechat.FormatJSON,
			body:   `{"FromUserName":"o1","CreateTime":1,"MsgType":"event","Event":"subscribe_msg_popup_event","List":[{"TemplateId":"a","SubscribeStatusString":"accept","PopupScene":0},{"TemplateId":"b","SubscribeStatusString":"reject","PopupScene":1}]}`,
			want: wechat.Push{FromUserName: "o1", CreateTime: 1, MsgType: "event", Event: wechat.EventSubscribePopup,
				Subscriptions: []wechat.SubscriptionEvent{{TemplateID: "a", Status: "accept", PopupScene: "0"}, {TemplateID: "b", Status: "reject", PopupScene: "1"}}},
		},
		{
			name:   "change, official XML",
			format: wechat.FormatXML,
			body:   `<xml><ToUserName><![CDATA[gh_123456789abc]]></ToUserName><FromUserName><![CDATA[otFpruAK8D-E6EfStSYonYSBZ8_4]]></FromUserName><CreateTime>1610969440</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe_msg_change_event]]></Event><SubscribeMsgChangeEvent><List><TemplateId><![CDATA[VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc]]></TemplateId><SubscribeStatusString><![CDATA[reject]]></SubscribeStatusString></List></SubscribeMsgChangeEvent></xml>`,
			want: wechat.Push{ToUserName: "gh_123456789abc", FromUserName: "otFpruAK8D-E6EfStSYonYSBZ8_4", CreateTime: 1610969440,
				MsgType: "event", Event: wechat.EventSubscribeChange,
				Subscriptions: []wechat.SubscriptionEvent{{TemplateID: "VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc", Status: "reject"}}},
		},
		{
			name:   "change, XML under the OA doc's wrong wrapper",
			format: wechat.FormatXML,
			body:   `<xml><FromUserName><![CDATA[o1]]></FromUserName><CreateTime>1610969440</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe_msg_change_event]]></Event><SubscribeMsgPopupEvent><List><TemplateId><![CDATA[tpl]]></TemplateId><SubscribeStatusString><![CDATA[reject]]></SubscribeStatusString></List></SubscribeMsgPopupEvent></xml>`,
			want: wechat.Push{FromUserName: "o1", CreateTime: 1610969440, MsgType: "event", Event: wechat.EventSubscribeChange,
				Subscriptions: []wechat.SubscriptionEvent{{TemplateID: "tpl", Status: "reject"}}},
		},
		{
			name:   "change, official JSON",
			format: wechat.FormatJSON,
			body:   `{"ToUserName":"gh_123456789abc","FromUserName":"o7esq5OI1Uej6Xixw1lA2H7XDVbc","CreateTime":"1610968440","MsgType":"event","Event":"subscribe_msg_change_event","List":[{"TemplateId":"BEwX0BOT3MqK3Uc5oTU3CGBqzjpndk2jzUf7VfExd8","SubscribeStatusString":"reject"}]}`,
			want: wechat.Push{ToUserName: "gh_123456789abc", FromUserName: "o7esq5OI1Uej6Xixw1lA2H7XDVbc", CreateTime: 1610968440,
				MsgType: "event", Event: wechat.EventSubscribeChange,
				Subscriptions: []wechat.SubscriptionEvent{{TemplateID: "BEwX0BOT3MqK3Uc5oTU3CGBqzjpndk2jzUf7VfExd8", Status: "reject"}}},
		},
		{
			name:   "change, JSON under the old key SubscribeMsgChangeEvent",
			format: wechat.FormatJSON,
			body:   `{"FromUserName":"o1","CreateTime":1610968440,"MsgType":"event","Event":"subscribe_msg_change_event","SubscribeMsgChangeEvent":[{"TemplateId":"tpl","SubscribeStatusString":"reject"}]}`,
			want: wechat.Push{FromUserName: "o1", CreateTime: 1610968440, MsgType: "event", Event: wechat.EventSubscribeChange,
				Subscriptions: []wechat.SubscriptionEvent{{TemplateID: "tpl", Status: "reject"}}},
		},
		{
			name:   "popup, JSON under the old key holding a List (the XML shape)",
			format: wechat.FormatJSON,
			body:   `{"FromUserName":"o1","CreateTime":1,"MsgType":"event","Event":"subscribe_msg_popup_event","SubscribeMsgPopupEvent":{"List":{"TemplateId":"tpl","SubscribeStatusString":"accept","PopupScene":"0"}}}`,
			want: wechat.Push{FromUserName: "o1", CreateTime: 1, MsgType: "event", Event: wechat.EventSubscribePopup,
				Subscriptions: []wechat.SubscriptionEvent{{TemplateID: "tpl", Status: "accept", PopupScene: "0"}}},
		},
		{
			name:   "sent, official XML: MsgID beyond 2^53 stays exact",
			format: wechat.FormatXML,
			body:   `<xml><ToUserName><![CDATA[gh_123456789abc]]></ToUserName><FromUserName><![CDATA[otFpruAK8D-E6EfStSYonYSBZ8_4]]></FromUserName><CreateTime>1610969468</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe_msg_sent_event]]></Event><SubscribeMsgSentEvent><List><TemplateId><![CDATA[VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc]]></TemplateId><MsgID>1700827132819554304</MsgID><ErrorCode>0</ErrorCode><ErrorStatus><![CDATA[success]]></ErrorStatus></List></SubscribeMsgSentEvent></xml>`,
			want: wechat.Push{ToUserName: "gh_123456789abc", FromUserName: "otFpruAK8D-E6EfStSYonYSBZ8_4", CreateTime: 1610969468,
				MsgType: "event", Event: wechat.EventSubscribeSent,
				Sent: []wechat.SentEvent{{TemplateID: "VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc", MsgID: "1700827132819554304", ErrorCode: 0, ErrorStatus: "success"}}},
		},
		{
			name:   "sent, official JSON: strings",
			format: wechat.FormatJSON,
			body:   `{"ToUserName":"gh_123456789abc","FromUserName":"o7esq5PHRGBQYmeNyfG064wEFVpQ","CreateTime":"1620963428","MsgType":"event","Event":"subscribe_msg_sent_event","List":{"TemplateId":"BEwX0BO-T3MqK3Uc5oTU3CGBqzjpndk2jzUf7VfExd8","MsgID":"1864323726461255680","ErrorCode":"0","ErrorStatus":"success"}}`,
			want: wechat.Push{ToUserName: "gh_123456789abc", FromUserName: "o7esq5PHRGBQYmeNyfG064wEFVpQ", CreateTime: 1620963428,
				MsgType: "event", Event: wechat.EventSubscribeSent,
				Sent: []wechat.SentEvent{{TemplateID: "BEwX0BO-T3MqK3Uc5oTU3CGBqzjpndk2jzUf7VfExd8", MsgID: "1864323726461255680", ErrorStatus: "success"}}},
		},
		{
			name:   "sent, JSON numbers: MsgID 2^63-1 exact, negative ErrorCode",
			format: wechat.FormatJSON,
			body:   `{"FromUserName":"o1","CreateTime":1620963428,"MsgType":"event","Event":"subscribe_msg_sent_event","List":[{"TemplateId":"a","MsgId":9223372036854775807,"ErrorCode":-1,"ErrorStatus":"system error"},{"TemplateId":"b","MsgID":"1864323726461255680","ErrorCode":0}]}`,
			want: wechat.Push{FromUserName: "o1", CreateTime: 1620963428, MsgType: "event", Event: wechat.EventSubscribeSent,
				Sent: []wechat.SentEvent{{TemplateID: "a", MsgID: "9223372036854775807", ErrorCode: -1, ErrorStatus: "system error"}, {TemplateID: "b", MsgID: "1864323726461255680"}}},
		},
		{
			name:   "text message (vector D) keeps its MsgId",
			format: wechat.FormatXML,
			body:   vecDMsg,
			want:   wechat.Push{ToUserName: "gh_10f6c3c3ac5a", FromUserName: "oyORnuP8q7ou2gfYjqLzSIWZf0rs", CreateTime: 1409735668, MsgType: "text", MsgID: "6054768590064713728"},
		},
		{
			name:   "unknown event, JSON (vector A's debug_demo)",
			format: wechat.FormatJSON,
			body:   vecAMsg,
			want:   wechat.Push{ToUserName: "gh_97417a04a28d", FromUserName: "o9AgO5Kd5ggOC-bXrbNODIiE3bGY", CreateTime: 1714112445, MsgType: "event", Event: "debug_demo"},
		},
		{
			name:   "unknown event with a List: not typed, no error",
			format: wechat.FormatJSON,
			body:   `{"FromUserName":"o1","CreateTime":1,"MsgType":"event","Event":"future_event","List":[{"X":1}]}`,
			want:   wechat.Push{FromUserName: "o1", CreateTime: 1, MsgType: "event", Event: "future_event"},
		},
		{
			name:   "surrounding white space, a BOM, padded values",
			format: wechat.FormatJSON,
			body:   "\ufeff \n\t" + `{"FromUserName":" o1 ","CreateTime":" 7 ","MsgType":"event","Event":"subscribe_msg_change_event","List":{"TemplateId":" tpl ","SubscribeStatusString":"reject"}}` + " \r\n\t ",
			want: wechat.Push{FromUserName: "o1", CreateTime: 7, MsgType: "event", Event: wechat.EventSubscribeChange,
				Subscriptions: []wechat.SubscriptionEvent{{TemplateID: "tpl", Status: "reject"}}},
		},
		{
			name:   "XML with white space around CDATA and after the root",
			format: wechat.FormatXML,
			body:   "\n<xml>\n<FromUserName>\n  <![CDATA[o1]]>\n</FromUserName><CreateTime> 7 </CreateTime><MsgType>event</MsgType><Event>subscribe_msg_popup_event</Event><SubscribeMsgPopupEvent><List><TemplateId> tpl </TemplateId><SubscribeStatusString>accept</SubscribeStatusString><PopupScene> 0 </PopupScene></List></SubscribeMsgPopupEvent></xml>\n\n",
			want: wechat.Push{FromUserName: "o1", CreateTime: 7, MsgType: "event", Event: wechat.EventSubscribePopup,
				Subscriptions: []wechat.SubscriptionEvent{{TemplateID: "tpl", Status: "accept", PopupScene: "0"}}},
		},
		{
			name:   "popup with no entries: parsed, nothing to apply",
			format: wechat.FormatJSON,
			body:   `{"FromUserName":"o1","CreateTime":1,"MsgType":"event","Event":"subscribe_msg_popup_event","List":[]}`,
			want:   wechat.Push{FromUserName: "o1", CreateTime: 1, MsgType: "event", Event: wechat.EventSubscribePopup},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := wechat.ParsePush([]byte(tt.body), "")
			if err != nil {
				t.Fatalf("ParsePush: %v", err)
			}
			if p.Format != tt.format || string(p.Raw) != tt.body {
				t.Errorf("Format %q, Raw %d bytes; want %q, the body", p.Format, len(p.Raw), tt.format)
			}
			got := *p
			got.Format, got.Raw = "", nil
			if !pushEqual(got, tt.want) {
				t.Errorf("push =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func pushEqual(a, b wechat.Push) bool {
	return a.ToUserName == b.ToUserName && a.FromUserName == b.FromUserName && a.CreateTime == b.CreateTime &&
		a.MsgType == b.MsgType && a.Event == b.Event && a.MsgID == b.MsgID && a.Mode == b.Mode &&
		slices.Equal(a.Subscriptions, b.Subscriptions) && slices.Equal(a.Sent, b.Sent) &&
		ptrEqual(a.Follow, b.Follow) && ptrEqual(a.TemplateJob, b.TemplateJob)
}

func TestParsePushRefuses(t *testing.T) {
	tests := []struct{ name, body, format string }{
		{"empty", "", ""},
		{"white space", " \n ", ""},
		{"neither XML nor JSON", "MsgType=event", ""},
		{"JSON array", `[{"MsgType":"event"}]`, ""},
		{"truncated JSON", `{"MsgType":"event"`, ""},
		{"trailing garbage after JSON", `{"MsgType":"event"} x`, ""},
		{"trailing comma (the doc's typo)", `{"MsgType":"event",}`, ""},
		{"no MsgType", `{"FromUserName":"o1","CreateTime":1}`, ""},
		{"MsgType an object", `{"MsgType":{}}`, ""},
		{"CreateTime not an integer", `{"MsgType":"event","CreateTime":"yesterday"}`, ""},
		{"CreateTime a float", `{"MsgType":"event","CreateTime":1.5}`, ""},
		{"List a string", `{"MsgType":"event","Event":"subscribe_msg_popup_event","List":"tpl"}`, ""},
		{"List of strings", `{"MsgType":"event","Event":"subscribe_msg_popup_event","List":["tpl"]}`, ""},
		{"entry without TemplateId", `{"MsgType":"event","Event":"subscribe_msg_change_event","List":{"SubscribeStatusString":"reject"}}`, ""},
		{"sent entry without MsgID", `{"MsgType":"event","Event":"subscribe_msg_sent_event","List":{"TemplateId":"t","ErrorCode":0}}`, ""},
		{"TEMPLATESENDJOBFINISH without MsgID", `{"MsgType":"event","Event":"TEMPLATESENDJOBFINISH","Status":"success"}`, ""},
		{"TEMPLATESENDJOBFINISH with an object MsgID", `{"MsgType":"event","Event":"TEMPLATESENDJOBFINISH","MsgID":{},"Status":"success"}`, ""},
		{"ErrorCode not an integer", `{"MsgType":"event","Event":"subscribe_msg_sent_event","List":{"TemplateId":"t","MsgID":"1","ErrorCode":"E"}}`, ""},
		{"XML not closed", `<xml><MsgType>event</MsgType>`, ""},
		{"XML with an unknown entity", `<xml><MsgType>&evil;</MsgType></xml>`, ""},
		{"XML CreateTime not an integer", `<xml><MsgType>event</MsgType><CreateTime>x</CreateTime></xml>`, ""},
		{"XML parsed as JSON", `<xml><MsgType>event</MsgType></xml>`, wechat.FormatJSON},
		{"JSON parsed as XML", `{"MsgType":"event"}`, wechat.FormatXML},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := wechat.ParsePush([]byte(tt.body), tt.format)
			if !errors.Is(err, wechat.ErrMalformedPush) {
				t.Fatalf("ParsePush = %+v, %v; want ErrMalformedPush", p, err)
			}
		})
	}
	if _, err := wechat.ParsePush([]byte(`{"MsgType":"event"}`), "yaml"); err == nil {
		t.Error("unknown format: want error")
	}
}

// DedupeKey: equal for WeChat's retries (same message, whatever the format
// or the encryption around it), different for different pushes.
func TestPushDedupeKey(t *testing.T) {
	key := func(body string) string {
		t.Helper()
		p, err := wechat.ParsePush([]byte(body), "")
		if err != nil {
			t.Fatalf("ParsePush(%.50q): %v", body, err)
		}
		return p.DedupeKey()
	}
	popup := `{"FromUserName":"o1","CreateTime":1700000000,"MsgType":"event","Event":"subscribe_msg_popup_event","List":[{"TemplateId":"a","SubscribeStatusString":"accept","PopupScene":"0"},{"TemplateId":"b","SubscribeStatusString":"reject","PopupScene":"0"}]}`
	base := key(popup)

	same := map[string]string{
		"the same bytes again": popup,
		"entries reordered":    `{"FromUserName":"o1","CreateTime":1700000000,"MsgType":"event","Event":"subscribe_msg_popup_event","List":[{"TemplateId":"b","SubscribeStatusString":"reject","PopupScene":"0"},{"TemplateId":"a","SubscribeStatusString":"accept","PopupScene":"0"}]}`,
		"CreateTime a string":  strings.Replace(popup, `1700000000`, `"1700000000"`, 1),
		"as XML": `<xml><FromUserName>o1</FromUserName><CreateTime>1700000000</CreateTime><MsgType>event</MsgType><Event>subscribe_msg_popup_event</Event><SubscribeMsgPopupEvent>` +
			`<List><TemplateId>a</TemplateId><SubscribeStatusString>accept</SubscribeStatusString><PopupScene>0</PopupScene></List>` +
			`<List><TemplateId>b</TemplateId><SubscribeStatusString>reject</SubscribeStatusString><PopupScene>0</PopupScene></List></SubscribeMsgPopupEvent></xml>`,
	}
	for name, body := range same {
		if k := key(body); k != base {
			t.Errorf("%s: key %q, want %q", name, k, base)
		}
	}

	different := map[string]string{
		"another user":     strings.Replace(popup, `"o1"`, `"o2"`, 1),
		"another second":   strings.Replace(popup, `1700000000`, `1700000001`, 1),
		"another event":    strings.Replace(popup, `subscribe_msg_popup_event`, `subscribe_msg_change_event`, 1),
		"another template": strings.Replace(popup, `"TemplateId":"b"`, `"TemplateId":"c"`, 1),
		"another status":   strings.Replace(popup, `"reject"`, `"accept"`, 1),
		"fewer templates":  `{"FromUserName":"o1","CreateTime":1700000000,"MsgType":"event","Event":"subscribe_msg_popup_event","List":{"TemplateId":"a","SubscribeStatusString":"accept"}}`,
	}
	seen := map[string]string{base: "base"}
	for name, body := range different {
		k := key(body)
		if prev, ok := seen[k]; ok {
			t.Errorf("%s: key %q equals that of %s", name, k, prev)
		}
		seen[k] = name
	}

	sent := func(msgid string) string {
		return `{"FromUserName":"o1","CreateTime":1700000000,"MsgType":"event","Event":"subscribe_msg_sent_event","List":{"TemplateId":"a","MsgID":` + msgid + `,"ErrorCode":0}}`
	}
	if key(sent(`"1864323726461255680"`)) != key(sent(`1864323726461255680`)) {
		t.Error("sent: MsgID as string and as number give different keys")
	}
	if key(sent(`1864323726461255680`)) == key(sent(`1864323726461255681`)) {
		t.Error("sent: msgids one apart (indistinguishable as float64) give the same key")
	}

	// Without sender and time the content is the identity.
	if key(`{"MsgType":"x","A":1}`) == key(`{"MsgType":"x","A":2}`) {
		t.Error("anonymous messages with different content share a key")
	}

	// Long keys stay bounded.
	var b strings.Builder
	b.WriteString(`{"FromUserName":"o1","CreateTime":1,"MsgType":"event","Event":"subscribe_msg_popup_event","List":[`)
	for i := range 200 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"TemplateId":"tpl-` + strings.Repeat("x", 40) + string(rune('a'+i%26)) + `","SubscribeStatusString":"accept"}`)
	}
	b.WriteString(`]}`)
	long := key(b.String())
	if len(long) > 512 || !strings.HasPrefix(long, "o1|1|subscribe_msg_popup_event|") {
		t.Errorf("long key: %d bytes, %.60q", len(long), long)
	}
}

// The official account's events, as its docs print them: the typed fields
// say what the bridge needs without it reading Event or EventKey.
func TestParseOfficialAccountPush(t *testing.T) {
	tests := []struct {
		name     string
		body     string
		want     wechat.Push
		scene    string // QRScene
		hasScene bool
	}{
		{
			name: "follow, official XML sample",
			body: `<xml><ToUserName><![CDATA[toUser]]></ToUserName><FromUserName><![CDATA[FromUser]]></FromUserName><CreateTime>123456789</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event></xml>`,
			want: wechat.Push{ToUserName: "toUser", FromUserName: "FromUser", CreateTime: 123456789, MsgType: "event", Event: wechat.EventFollow,
				Follow: &wechat.FollowEvent{Following: true}},
		},
		{
			name: "follow through a QR code, official XML sample",
			body: `<xml><ToUserName><![CDATA[toUser]]></ToUserName><FromUserName><![CDATA[FromUser]]></FromUserName><CreateTime>123456789</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event><EventKey><![CDATA[qrscene_123123]]></EventKey><Ticket><![CDATA[TICKET]]></Ticket></xml>`,
			want: wechat.Push{ToUserName: "toUser", FromUserName: "FromUser", CreateTime: 123456789, MsgType: "event", Event: wechat.EventFollow,
				Follow: &wechat.FollowEvent{Following: true, EventKey: "qrscene_123123", Ticket: "TICKET"}},
			scene: "123123", hasScene: true,
		},
		{
			name: "follow with an empty EventKey, as seen in the wild",
			body: `<xml><ToUserName><![CDATA[gh_b629c48b653e]]></ToUserName><FromUserName><![CDATA[ollB4jv7LA3tydjviJp5V9qTU_kA]]></FromUserName><CreateTime>1372307736</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event><EventKey><![CDATA[]]></EventKey></xml>`,
			want: wechat.Push{ToUserName: "gh_b629c48b653e", FromUserName: "ollB4jv7LA3tydjviJp5V9qTU_kA", CreateTime: 1372307736, MsgType: "event", Event: wechat.EventFollow,
				Follow: &wechat.FollowEvent{Following: true}},
		},
		{
			name: "unfollow, JSON",
			body: `{"ToUserName":"gh_b629c48b653e","FromUserName":"ollB4jqgdO_cRnVXk_wRnSywgtQ8","CreateTime":1372309890,"MsgType":"event","Event":"unsubscribe","EventKey":""}`,
			want: wechat.Push{ToUserName: "gh_b629c48b653e", FromUserName: "ollB4jqgdO_cRnVXk_wRnSywgtQ8", CreateTime: 1372309890, MsgType: "event", Event: wechat.EventUnfollow,
				Follow: &wechat.FollowEvent{}},
		},
		{
			name: "TEMPLATESENDJOBFINISH success, official XML sample",
			body: `<xml><ToUserName><![CDATA[gh_7f083739789a]]></ToUserName><FromUserName><![CDATA[oia2TjuEGTNoeX76QEjQNrcURxG8]]></FromUserName><CreateTime>1395658920</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event><MsgID>200163836</MsgID><Status><![CDATA[success]]></Status></xml>`,
			want: wechat.Push{ToUserName: "gh_7f083739789a", FromUserName: "oia2TjuEGTNoeX76QEjQNrcURxG8", CreateTime: 1395658920, MsgType: "event",
				Event: wechat.EventTemplateSendJobFinish, MsgID: "200163836",
				TemplateJob: &wechat.TemplateJobEvent{MsgID: "200163836", Status: wechat.TemplateStatusSuccess}},
		},
		{
			name: "TEMPLATESENDJOBFINISH user block, a real compatible-mode body (Encrypt ignored by ParsePush)",
			body: `<xml>    <ToUserName><![CDATA[gh_f5b69a2ea37b]]></ToUserName>    <FromUserName><![CDATA[ovPQ26Vgx51Ep-HoZqOITMHLk6eg]]></FromUserName>    <CreateTime>1717466001</CreateTime>    <MsgType><![CDATA[event]]></MsgType>    <Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event>    <MsgID>3487542469355618313</MsgID>    <Status><![CDATA[failed:user block]]></Status>    <Encrypt><![CDATA[MOEJkz1VYnBN6Kh9w1yr5PkeTqbf]]></Encrypt></xml>`,
			want: wechat.Push{ToUserName: "gh_f5b69a2ea37b", FromUserName: "ovPQ26Vgx51Ep-HoZqOITMHLk6eg", CreateTime: 1717466001, MsgType: "event",
				Event: wechat.EventTemplateSendJobFinish, MsgID: "3487542469355618313",
				TemplateJob: &wechat.TemplateJobEvent{MsgID: "3487542469355618313", Status: wechat.TemplateStatusUserBlock}},
		},
		{
			name: "TEMPLATESENDJOBFINISH system failed, JSON with a numeric MsgID beyond 2^53",
			body: `{"ToUserName":"gh_7f083739789a","FromUserName":"oia2TjuEGTNoeX76QEjQNrcURxG8","CreateTime":1395659000,"MsgType":"event","Event":"TEMPLATESENDJOBFINISH","MsgID":3487556454020562953,"Status":"failed: system failed"}`,
			want: wechat.Push{ToUserName: "gh_7f083739789a", FromUserName: "oia2TjuEGTNoeX76QEjQNrcURxG8", CreateTime: 1395659000, MsgType: "event",
				Event: wechat.EventTemplateSendJobFinish, MsgID: "3487556454020562953",
				TemplateJob: &wechat.TemplateJobEvent{MsgID: "3487556454020562953", Status: wechat.TemplateStatusSystemFailed}},
		},
		{
			name: "subscription notification change under the OA doc's popup wrapper",
			body: `<xml><ToUserName><![CDATA[gh_123456789abc]]></ToUserName><FromUserName><![CDATA[otFpruAK8D-E6EfStSYonYSBZ8_4]]></FromUserName><CreateTime>1610969440</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe_msg_change_event]]></Event><SubscribeMsgPopupEvent><List><TemplateId><![CDATA[VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc]]></TemplateId><SubscribeStatusString><![CDATA[reject]]></SubscribeStatusString></List></SubscribeMsgPopupEvent></xml>`,
			want: wechat.Push{ToUserName: "gh_123456789abc", FromUserName: "otFpruAK8D-E6EfStSYonYSBZ8_4", CreateTime: 1610969440, MsgType: "event",
				Event: wechat.EventSubscribeChange, Subscriptions: []wechat.SubscriptionEvent{{TemplateID: "VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc", Status: "reject"}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := wechat.ParsePush([]byte(tt.body), "")
			if err != nil {
				t.Fatalf("ParsePush: %v", err)
			}
			got := *p
			got.Format, got.Raw = "", nil
			if !pushEqual(got, tt.want) {
				t.Errorf("push =\n%+v\nwant\n%+v", got, tt.want)
			}
			if p.Follow != nil {
				if scene, ok := p.Follow.QRScene(); scene != tt.scene || ok != tt.hasScene {
					t.Errorf("QRScene() = %q, %v; want %q, %v", scene, ok, tt.scene, tt.hasScene)
				}
			}
			if p.TemplateJob != nil && p.TemplateJob.Delivered() != (p.TemplateJob.Status == "success") {
				t.Errorf("Delivered() = %v for %q", p.TemplateJob.Delivered(), p.TemplateJob.Status)
			}
		})
	}
}

// Retries of an official account push share a key; different pushes do
// not: a follow and the unfollow in the same second, two receipts.
func TestOfficialAccountPushDedupeKey(t *testing.T) {
	key := func(body string) string {
		t.Helper()
		p, err := wechat.ParsePush([]byte(body), "")
		if err != nil {
			t.Fatalf("ParsePush(%.50q): %v", body, err)
		}
		return p.DedupeKey()
	}
	follow := `{"FromUserName":"o1","CreateTime":1700000000,"MsgType":"event","Event":"subscribe"}`
	unfollow := `{"FromUserName":"o1","CreateTime":1700000000,"MsgType":"event","Event":"unsubscribe"}`
	job := func(msgid, status string) string {
		return `<xml><FromUserName>o1</FromUserName><CreateTime>1700000000</CreateTime><MsgType>event</MsgType><Event>TEMPLATESENDJOBFINISH</Event><MsgID>` + msgid + `</MsgID><Status>` + status + `</Status></xml>`
	}
	jobJSON := `{"FromUserName":"o1","CreateTime":"1700000000","MsgType":"event","Event":"TEMPLATESENDJOBFINISH","MsgID":"3487542469355618313","Status":"success"}`
	if key(follow) != key(`<xml><FromUserName>o1</FromUserName><CreateTime>1700000000</CreateTime><MsgType>event</MsgType><Event>subscribe</Event></xml>`) {
		t.Error("a follow as JSON and as XML: different keys")
	}
	if key(follow) == key(unfollow) {
		t.Error("follow and unfollow in the same second share a key")
	}
	if key(job("3487542469355618313", "success")) != key(jobJSON) {
		t.Error("a receipt as XML and as JSON: different keys")
	}
	if key(job("3487542469355618313", "success")) == key(job("3487542469355618314", "success")) {
		t.Error("receipts of two messages in the same second share a key")
	}
	if !strings.Contains(key(jobJSON), "3487542469355618313") {
		t.Errorf("receipt key %q lacks the msgid", key(jobJSON))
	}
}
