package natskv

// StopRenewals makes this store's lease lapse as if its bridge had died;
// the store stays usable.
func (s *Store) StopRenewals() { s.hooks.noRenew.Store(true) }

// DropAcks loses the acknowledgements of this store's next n commits
// after the server committed them.
func (s *Store) DropAcks(n int) { s.hooks.dropAcks.Store(int32(n)) }

// Token and ParseToken are the encoding of one id part as a key token.
var (
	Token      = token
	ParseToken = parseToken
)

// RoundTrips counts the requests this store made that the server
// answered: direct gets and commits.
func (s *Store) RoundTrips() int64 { return s.trips.Load() }
