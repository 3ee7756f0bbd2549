package wechat

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// The message-push crypto of WeChat's compatible and safe modes: AES-256-CBC
// with the IV taken from the key's first 16 bytes, PKCS#7 padding to 32
// bytes, and a plaintext of random(16) + length(4, big-endian) + message +
// appid. Signatures are sha1 over the sorted, concatenated strings.

// ErrBadSignature: a signature does not match.
var ErrBadSignature = errors.New("wechat push: bad signature")

// ErrDecrypt: a ciphertext cannot be decrypted or its content is malformed.
var ErrDecrypt = errors.New("wechat push: cannot decrypt")

// ErrAppIDMismatch: the decrypted message is for another app.
var ErrAppIDMismatch = errors.New("wechat push: appid does not match")

// Signature is sha1 of the lexicographically sorted, concatenated parts, in
// lowercase hex: the URL signature takes (token, timestamp, nonce), the
// message signature also the Encrypt field.
func Signature(parts ...string) string {
	s := append([]string(nil), parts...)
	sort.Strings(s)
	sum := sha1.Sum([]byte(strings.Join(s, "")))
	return hex.EncodeToString(sum[:])
}

// VerifySignature compares a signature in constant time.
func VerifySignature(got string, parts ...string) error {
	want := Signature(parts...)
	if subtle.ConstantTimeCompare([]byte(strings.ToLower(got)), []byte(want)) != 1 {
		return ErrBadSignature
	}
	return nil
}

// AESKey decodes an EncodingAESKey (43 characters) into the 32-byte key.
func AESKey(encodingAESKey string) ([]byte, error) {
	if len(encodingAESKey) != 43 {
		return nil, fmt.Errorf("EncodingAESKey must be 43 characters, got %d", len(encodingAESKey))
	}
	key, err := base64.StdEncoding.DecodeString(encodingAESKey + "=")
	if err != nil || len(key) != 32 {
		return nil, errors.New("EncodingAESKey is not valid base64 of 32 bytes")
	}
	return key, nil
}

const pushBlock = 32

// Encrypt encrypts msg for appid the way WeChat does and returns the
// base64 Encrypt field. random is the 16-byte prefix; nil draws one.
func Encrypt(key []byte, appid string, msg, random []byte) (string, error) {
	if len(key) != 32 {
		return "", errors.New("AES key must be 32 bytes")
	}
	if random == nil {
		random = make([]byte, 16)
		if _, err := rand.Read(random); err != nil {
			return "", err
		}
	}
	if len(random) != 16 {
		return "", errors.New("random prefix must be 16 bytes")
	}
	plain := make([]byte, 0, 20+len(msg)+len(appid)+pushBlock)
	plain = append(plain, random...)
	plain = binary.BigEndian.AppendUint32(plain, uint32(len(msg)))
	plain = append(plain, msg...)
	plain = append(plain, appid...)
	pad := pushBlock - len(plain)%pushBlock
	for i := 0; i < pad; i++ {
		plain = append(plain, byte(pad))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return "", err
	}
	out := make([]byte, len(plain))
	cipher.NewCBCEncrypter(block, key[:16]).CryptBlocks(out, plain)
	return base64.StdEncoding.EncodeToString(out), nil
}

// Decrypt decrypts an Encrypt field and returns the message and the appid
// it was encrypted for; comparing that appid is the caller's job
// (PushConfig.Open does it). It never panics on malformed input. Pads of
// 1..32 bytes are valid: WeChat pads to 32, not to the AES block size.
func Decrypt(key []byte, encrypted string) (msg []byte, appid string, err error) {
	if len(key) != 32 {
		return nil, "", fmt.Errorf("%w: AES key must be 32 bytes", ErrDecrypt)
	}
	data, err := base64.StdEncoding.DecodeString(encrypted)
	if err != nil {
		return nil, "", fmt.Errorf("%w: not base64", ErrDecrypt)
	}
	if len(data) == 0 || len(data)%aes.BlockSize != 0 {
		return nil, "", fmt.Errorf("%w: ciphertext length %d is not a multiple of 16", ErrDecrypt, len(data))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrDecrypt, err)
	}
	plain := make([]byte, len(data))
	cipher.NewCBCDecrypter(block, key[:16]).CryptBlocks(plain, data)
	pad := int(plain[len(plain)-1])
	if pad < 1 || pad > pushBlock || pad > len(plain) {
		return nil, "", fmt.Errorf("%w: bad padding", ErrDecrypt)
	}
	for _, c := range plain[len(plain)-pad:] {
		if int(c) != pad {
			return nil, "", fmt.Errorf("%w: bad padding", ErrDecrypt)
		}
	}
	plain = plain[:len(plain)-pad]
	if len(plain) < 20 {
		return nil, "", fmt.Errorf("%w: plaintext too short", ErrDecrypt)
	}
	n := binary.BigEndian.Uint32(plain[16:20])
	if uint64(n) > uint64(len(plain)-20) {
		return nil, "", fmt.Errorf("%w: message length %d exceeds plaintext", ErrDecrypt, n)
	}
	msg = plain[20 : 20+n]
	return msg, string(plain[20+n:]), nil
}
