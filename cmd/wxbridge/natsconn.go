package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/nats-io/nats.go"
)

// natsAuth is how a subcommand authenticates to an external NATS
// deployment: what nats.go supports and operators use. Every setting is a
// flag with an environment variable; none is ever logged (the values are
// paths or secrets, and only their presence is reported).
type natsAuth struct {
	creds, nkey            string // credentials file (JWT + NKey), NKey seed file
	user, password, token  string
	tlsCA, tlsCert, tlsKey string
}

func (a *natsAuth) register(f *flags) {
	f.StringVar(&a.creds, "nats-creds", envOr("WXBRIDGE_NATS_CREDS", ""), "NATS credentials file, JWT and NKey (env WXBRIDGE_NATS_CREDS)")
	f.StringVar(&a.nkey, "nats-nkey", envOr("WXBRIDGE_NATS_NKEY", ""), "file holding an NKey seed (env WXBRIDGE_NATS_NKEY)")
	f.StringVar(&a.user, "nats-user", envOr("WXBRIDGE_NATS_USER", ""), "NATS user (env WXBRIDGE_NATS_USER)")
	f.StringVar(&a.password, "nats-password", envOr("WXBRIDGE_NATS_PASSWORD", ""), "NATS password; prefer the environment (env WXBRIDGE_NATS_PASSWORD)")
	f.StringVar(&a.token, "nats-token", envOr("WXBRIDGE_NATS_TOKEN", ""), "NATS token; prefer the environment (env WXBRIDGE_NATS_TOKEN)")
	f.StringVar(&a.tlsCA, "nats-tls-ca", envOr("WXBRIDGE_NATS_TLS_CA", ""), "CA certificate file the NATS servers' certificates are checked against (env WXBRIDGE_NATS_TLS_CA)")
	f.StringVar(&a.tlsCert, "nats-tls-cert", envOr("WXBRIDGE_NATS_TLS_CERT", ""), "client certificate file, for servers that verify clients (env WXBRIDGE_NATS_TLS_CERT)")
	f.StringVar(&a.tlsKey, "nats-tls-key", envOr("WXBRIDGE_NATS_TLS_KEY", ""), "client certificate's key file (env WXBRIDGE_NATS_TLS_KEY)")
}

// options turns the settings into nats.go options, refusing combinations
// that cannot work. Files are checked for existence here so that a typo is
// a usage error naming the flag, not a connection failure.
func (a *natsAuth) options() ([]nats.Option, error) {
	var opts []nats.Option
	var errs []error
	file := func(flag, path string) bool {
		if path == "" {
			return false
		}
		if _, err := os.Stat(path); err != nil {
			errs = append(errs, fmt.Errorf("--%s: %w", flag, err))
			return false
		}
		return true
	}
	methods := 0
	for _, set := range []bool{a.creds != "", a.nkey != "", a.user != "", a.token != ""} {
		if set {
			methods++
		}
	}
	if methods > 1 {
		errs = append(errs, errors.New("give one of --nats-creds, --nats-nkey, --nats-user or --nats-token"))
	}
	if file("nats-creds", a.creds) {
		opts = append(opts, nats.UserCredentials(a.creds))
	}
	if file("nats-nkey", a.nkey) {
		o, err := nats.NkeyOptionFromSeed(a.nkey)
		if err != nil {
			// The error is about the file's form; it never quotes the seed.
			errs = append(errs, fmt.Errorf("--nats-nkey: %w", err))
		} else {
			opts = append(opts, o)
		}
	}
	switch {
	case a.user != "":
		opts = append(opts, nats.UserInfo(a.user, a.password))
	case a.password != "":
		errs = append(errs, errors.New("--nats-password needs --nats-user"))
	}
	if a.token != "" {
		opts = append(opts, nats.Token(a.token))
	}
	if file("nats-tls-ca", a.tlsCA) {
		opts = append(opts, nats.RootCAs(a.tlsCA))
	}
	if (a.tlsCert == "") != (a.tlsKey == "") {
		errs = append(errs, errors.New("--nats-tls-cert and --nats-tls-key go together"))
	} else if file("nats-tls-cert", a.tlsCert) && file("nats-tls-key", a.tlsKey) {
		opts = append(opts, nats.ClientCert(a.tlsCert, a.tlsKey))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, &usageError{err}
	}
	return opts, nil
}

// describe says which settings are in use, for a log line: names only.
func (a *natsAuth) describe() []string {
	var out []string
	for name, set := range map[string]bool{"creds": a.creds != "", "nkey": a.nkey != "", "user": a.user != "",
		"token": a.token != "", "tls-ca": a.tlsCA != "", "tls-client-cert": a.tlsCert != ""} {
		if set {
			out = append(out, name)
		}
	}
	return out
}
