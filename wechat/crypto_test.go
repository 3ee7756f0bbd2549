package wechat_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/wxbridge/wxbridge/wechat"
)

// Every signature the reference's vectors A–E state, recomputed.
func TestSignatureVectors(t *testing.T) {
	tests := []struct {
		name  string
		parts []string
		want  string
	}{
		{"A url signature", []string{vecAToken, "1714112445", "415670741"}, "6c5c811b55cc85e0e1b54100749188c20beb3f5d"},
		{"A msg_signature", []string{vecAToken, "1714112445", "415670741", bodyEncrypt(t, vecABody)}, "046e02f8204d34f8ba5fa3b1db94908f3df2e9b3"},
		{"A reply MsgSignature", []string{vecAReplyTimestamp, vecAReplyNonce, vecAToken, vecAReplyEncrypt}, vecAReplySignature},
		{"B url signature", []string{vecBToken, "1715943329", "1590219412"}, "cc0c594499c1634947d5b502f158ee518947db27"},
		{"B msg_signature", []string{vecBToken, "1715943329", "1590219412", vecBEncrypt}, "6c12a4205838198b8fa631b3220723bb07f1015c"},
		{"B reply MsgSignature", []string{vecBToken, "1713424427", "415670741", vecBReplyEncrypt}, vecBReplySignature},
		{"C msg_signature", []string{vecCToken, vecCTimestamp, vecCNonce, vecCEncrypt}, vecCMsgSignature},
		{"D url signature", []string{vecDToken, vecDTimestamp, vecDNonce}, vecDSignature},
		{"D msg_signature", []string{vecDToken, vecDTimestamp, vecDNonce, bodyEncrypt(t, vecDBody)}, vecDMsgSignature},
		{"E GET", []string{vecEToken, "1714036504", "1514711492"}, "f464b24fc39322e44b38aa78f5edd27bd1441696"},
		{"E plaintext POST", []string{vecEToken, "1714037059", "486452656"}, "899cf89e464efb63f54ddac96b0a0a235f53aa78"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := wechat.Signature(tt.parts...); got != tt.want {
				t.Errorf("Signature = %s, want %s", got, tt.want)
			}
			if err := wechat.VerifySignature(tt.want, tt.parts...); err != nil {
				t.Errorf("VerifySignature(right) = %v", err)
			}
			// Hex case carries no meaning.
			if err := wechat.VerifySignature(strings.ToUpper(tt.want), tt.parts...); err != nil {
				t.Errorf("VerifySignature(upper case) = %v", err)
			}
			if got := indepSign(tt.parts...); got != tt.want {
				t.Errorf("independent signer = %s, want %s (the test's own signer is wrong)", got, tt.want)
			}
		})
	}
}

func TestVerifySignatureRefuses(t *testing.T) {
	parts := []string{vecEToken, "1714036504", "1514711492"}
	good := "f464b24fc39322e44b38aa78f5edd27bd1441696"
	for _, got := range []string{"", "0", good[:39], good + "0", "g464b24fc39322e44b38aa78f5edd27bd1441696", strings.Repeat("0", 40)} {
		if err := wechat.VerifySignature(got, parts...); !errors.Is(err, wechat.ErrBadSignature) {
			t.Errorf("VerifySignature(%q) = %v, want ErrBadSignature", got, err)
		}
	}
}

func TestAESKey(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantHex string
		wantErr bool
	}{
		{"vector A: 43 A is 32 zero bytes", vecAAESKey, strings.Repeat("00", 32), false},
		{"vector C", vecCAESKey, vecCKeyHex, false},
		{"too short", vecCAESKey[:42], "", true},
		{"too long", vecCAESKey + "H", "", true},
		{"not base64", strings.Repeat("!", 43), "", true},
		{"empty", "", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, err := wechat.AESKey(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("AESKey err = %v, want error %v", err, tt.wantErr)
			}
			if err != nil {
				if tt.in != "" && strings.Contains(err.Error(), tt.in) {
					t.Errorf("error %q reveals the key", err)
				}
				return
			}
			if got := hex.EncodeToString(key); got != tt.wantHex {
				t.Errorf("key = %s, want %s", got, tt.wantHex)
			}
		})
	}
}

// cryptoVectors are the reference's ciphertexts with their keys, random
// prefixes, messages and appids.
var cryptoVectors = []struct {
	name, aesKey, appid, random, msg, encrypt string
}{
	{"A inbound", vecAAESKey, vecAAppID, vecARandom, vecAMsg, ""}, // encrypt from the body
	{"A reply", vecAAESKey, vecAAppID, vecAReplyRandom, vecAReplyMsg, vecAReplyEncrypt},
	{"B inbound", vecBAESKey, vecBPlatformAppID, vecBRandom, vecBMsg, vecBEncrypt},
	{"B reply", vecBAESKey, vecBPlatformAppID, vecBReplyRandom, vecBReplyMsg, vecBReplyEncrypt},
	{"C", vecCAESKey, vecCAppID, vecCRandom, vecCMsg, vecCEncrypt},
	{"C reply", vecCAESKey, vecCAppID, vecCRandom, vecCReplyMsg, vecCReplyEncrypt},
	{"D", vecDAESKey, vecDAppID, vecDRandom, vecDMsg, ""}, // encrypt from the body
}

func vectorEncrypt(t *testing.T, name, encrypt string) string {
	t.Helper()
	if encrypt != "" {
		return encrypt
	}
	switch name {
	case "A inbound":
		return bodyEncrypt(t, vecABody)
	case "D":
		return bodyEncrypt(t, vecDBody)
	}
	t.Fatalf("no ciphertext for %s", name)
	return ""
}

func TestDecryptVectors(t *testing.T) {
	for _, v := range cryptoVectors {
		t.Run(v.name, func(t *testing.T) {
			key := mustKey(t, v.aesKey)
			msg, appid, err := wechat.Decrypt(key, vectorEncrypt(t, v.name, v.encrypt))
			if err != nil {
				t.Fatalf("Decrypt: %v", err)
			}
			if string(msg) != v.msg {
				t.Errorf("message = %q, want %q", msg, v.msg)
			}
			if appid != v.appid {
				t.Errorf("appid = %q, want %q", appid, v.appid)
			}
		})
	}
}

// Encrypting with the stated random prefix must reproduce each ciphertext
// byte for byte, which pins down IV, padding and layout together.
func TestEncryptVectors(t *testing.T) {
	for _, v := range cryptoVectors {
		t.Run(v.name, func(t *testing.T) {
			key := mustKey(t, v.aesKey)
			want := vectorEncrypt(t, v.name, v.encrypt)
			got, err := wechat.Encrypt(key, v.appid, []byte(v.msg), []byte(v.random))
			if err != nil {
				t.Fatalf("Encrypt: %v", err)
			}
			if got != want {
				t.Errorf("Encrypt =\n%s\nwant\n%s", got, want)
			}
			if ind := indepEncrypt(t, key, key[:16], v.appid, []byte(v.msg), v.random); ind != want {
				t.Errorf("independent encryptor disagrees with the vector: %s", ind)
			}
		})
	}
}

// Vector A's reply, assembled the way a safe-mode reply is sent.
func TestVectorAReply(t *testing.T) {
	key := mustKey(t, vecAAESKey)
	enc, err := wechat.Encrypt(key, vecAAppID, []byte(vecAReplyMsg), []byte(vecAReplyRandom))
	if err != nil {
		t.Fatal(err)
	}
	reply, err := json.Marshal(struct {
		Encrypt      string
		MsgSignature string
		TimeStamp    json.Number
		Nonce        string
	}{enc, wechat.Signature(vecAReplyTimestamp, vecAReplyNonce, vecAToken, enc), json.Number(vecAReplyTimestamp), vecAReplyNonce})
	if err != nil {
		t.Fatal(err)
	}
	if string(reply) != vecAReplyJSON {
		t.Errorf("reply =\n%s\nwant\n%s", reply, vecAReplyJSON)
	}
}

// Vector C is the IV catcher: a zero IV reproduces the all-zero-key vectors
// (A's key[:16] is zero) but not C. Decryption alone cannot catch it either:
// a wrong IV garbles only the first block, the random prefix, which is
// thrown away. Only an encryption test with a non-zero key can.
func TestVectorCCatchesZeroIV(t *testing.T) {
	zeroIV := make([]byte, 16)

	keyC := mustKey(t, vecCAESKey)
	if got := indepEncrypt(t, keyC, zeroIV, vecCAppID, []byte(vecCMsg), vecCRandom); got == vecCEncrypt {
		t.Fatal("a zero-IV encryptor reproduces vector C; the vector cannot catch it")
	}
	if got := indepEncrypt(t, keyC, keyC[:16], vecCAppID, []byte(vecCMsg), vecCRandom); got != vecCEncrypt {
		t.Fatal("IV = key[:16] does not reproduce vector C")
	}

	keyA := mustKey(t, vecAAESKey)
	if got := indepEncrypt(t, keyA, zeroIV, vecAAppID, []byte(vecAReplyMsg), vecAReplyRandom); got != vecAReplyEncrypt {
		t.Fatal("with an all-zero key a zero IV should be indistinguishable")
	}

	msg, appid, ok := indepDecrypt(t, keyC, zeroIV, vecCEncrypt)
	if !ok || string(msg) != vecCMsg || appid != vecCAppID {
		t.Fatalf("zero-IV decrypt = %q %q %v; expected it to pass, which is why decryption tests are not enough", msg, appid, ok)
	}
}

// WeChat pads to 32 bytes, so pads of 17..32 must be accepted: A's has 19,
// and a FullStr that is a multiple of 32 long gets a whole block of 32.
func TestDecryptPadsUpTo32(t *testing.T) {
	key := mustKey(t, vecCAESKey)
	for pad := 1; pad <= 32; pad++ {
		msg := bytes.Repeat([]byte("m"), 64-20-len(vecCAppID)-pad+32) // FullStr + pad = 96
		enc := indepEncrypt(t, key, key[:16], vecCAppID, msg, vecCRandom)
		got, appid, err := wechat.Decrypt(key, enc)
		if err != nil || !bytes.Equal(got, msg) || appid != vecCAppID {
			t.Errorf("pad %d: Decrypt = %q, %q, %v", pad, got, appid, err)
		}
	}
}

func TestDecryptRefuses(t *testing.T) {
	key := mustKey(t, vecCAESKey)
	iv := key[:16]
	full := func(random, msg, appid string, n uint32) []byte {
		b := []byte(random)
		b = append(b, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
		b = append(b, msg...)
		return append(b, appid...)
	}
	enc := func(plain []byte) string { return base64.StdEncoding.EncodeToString(indepCBC(t, key, iv, plain)) }
	padded := func(plain []byte, pad int) []byte {
		return append(plain, bytes.Repeat([]byte{byte(pad)}, pad)...)
	}
	good := full(vecCRandom, "hello", vecCAppID, 5) // 43 bytes: 21 to pad

	tests := []struct {
		name string
		enc  string
		key  []byte
	}{
		{"empty", "", key},
		{"not base64", "!!!!", key},
		{"length not a block multiple", base64.StdEncoding.EncodeToString(make([]byte, 17)), key},
		{"pad zero", enc(append(good, bytes.Repeat([]byte{0}, 21)...)), key},
		{"pad 33", enc(append(good, bytes.Repeat([]byte{33}, 21)...)), key},
		{"inconsistent pad", enc(append(good, append(bytes.Repeat([]byte{7}, 20), 21)...)), key},
		{"pad longer than the plaintext", enc(bytes.Repeat([]byte{32}, 16)), key},
		{"plaintext under 20 bytes", enc(padded([]byte("0123456789abcdef"), 16)), key},
		{"msg_len beyond the plaintext", enc(padded(full(vecCRandom, "hello", vecCAppID, 500), 21)), key},
		{"msg_len 2^32-1", enc(padded(full(vecCRandom, "hello", vecCAppID, 1<<32-1), 21)), key},
		{"short key", enc(padded(good, 21)), key[:16]},
		{"wrong key", enc(padded(good, 21)), mustKey(t, vecAAESKey)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg, appid, err := wechat.Decrypt(tt.key, tt.enc)
			if !errors.Is(err, wechat.ErrDecrypt) {
				t.Fatalf("Decrypt = %q, %q, %v; want ErrDecrypt", msg, appid, err)
			}
		})
	}
	// The control: the same construction, well formed, decrypts.
	if msg, appid, err := wechat.Decrypt(key, enc(padded(good, 21))); err != nil || string(msg) != "hello" || appid != vecCAppID {
		t.Fatalf("control: Decrypt = %q, %q, %v", msg, appid, err)
	}
}

func TestEncryptDecryptRoundTrip(t *testing.T) {
	key := mustKey(t, vecCAESKey)
	for _, msg := range []string{"", "x", strings.Repeat("长", 100), vecBMsg} {
		enc, err := wechat.Encrypt(key, vecCAppID, []byte(msg), nil) // fresh random prefix
		if err != nil {
			t.Fatal(err)
		}
		got, appid, err := wechat.Decrypt(key, enc)
		if err != nil || string(got) != msg || appid != vecCAppID {
			t.Errorf("round trip of %d bytes = %q, %q, %v", len(msg), got, appid, err)
		}
		if m, a, ok := indepDecrypt(t, key, key[:16], enc); !ok || string(m) != msg || a != vecCAppID {
			t.Errorf("independent decrypt of %d bytes = %q, %q, %v", len(msg), m, a, ok)
		}
	}
	if _, err := wechat.Encrypt(key[:16], vecCAppID, nil, nil); err == nil {
		t.Error("Encrypt with a 16-byte key: want error")
	}
	if _, err := wechat.Encrypt(key, vecCAppID, nil, []byte("short")); err == nil {
		t.Error("Encrypt with a 5-byte random prefix: want error")
	}
}
