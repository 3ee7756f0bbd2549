package bridge

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits on what a command may carry, besides the id limits in event.go.
const (
	// maxCodeBytes bounds a wx.login code (WeChat's are 32 characters).
	maxCodeBytes = 128
	// maxTemplateIDBytes bounds a template id (WeChat's are 43).
	maxTemplateIDBytes = 128
	// maxRoleChanges bounds the grants and revokes of one roles command.
	maxRoleChanges = 1000
	// maxSubscriptionResults bounds the templates of one subscriptions
	// report (wx.requestSubscribeMessage asks for at most 3 at a time).
	maxSubscriptionResults = 64
)

// field is one value of a command to check: its name, value and limit.
type field struct {
	name, value string
	limit       int
}

// checkFields refuses values too long to be real ids, not UTF-8, or with
// control characters, naming the field but never echoing a long value.
func checkFields(fields ...field) error {
	var errs []error
	for _, f := range fields {
		switch {
		case len(f.value) > f.limit:
			errs = append(errs, fmt.Errorf("%s is %d bytes, over the %d byte limit", f.name, len(f.value), f.limit))
		case !utf8.ValidString(f.value):
			errs = append(errs, fmt.Errorf("%s is not UTF-8", f.name))
		case strings.ContainsFunc(f.value, func(r rune) bool { return r < 0x20 || r == 0x7f }):
			errs = append(errs, fmt.Errorf("%s %s contains a control character", f.name, strconv.QuoteToASCII(clip(f.value))))
		}
	}
	return errors.Join(errs...)
}
