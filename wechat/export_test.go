package wechat

// TokenWaiters reports how many callers of app are blocked waiting for a
// token fetch. Tests use it to know that concurrent callers really overlap
// with one fetch before they let it finish.
func TokenWaiters(c *Client, app string) int {
	a, err := c.app(app)
	if err != nil {
		return -1
	}
	a.tok.mu.Lock()
	defer a.tok.mu.Unlock()
	return a.tok.waiters
}
