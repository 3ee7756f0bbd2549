package wechattest

// SetHoldHook makes every send call f while it holds its recipient, so a
// test can start a second send to the same openid exactly then.
func SetHoldHook(e *Emulator, f func()) { e.holdHook = f }
