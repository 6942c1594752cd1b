package config

import (
	"regexp"
	"strings"
)

// redacted replaces a password in a DSN shown in errors.
const redacted = "xxxxx"

// RedactDSN returns dsn with its passwords replaced by "xxxxx", for errors
// and logs: the password of a URL's user info ("postgres://u:pw@h/db"),
// the password and sslpassword query parameters ("?password=pw"), and the
// password and sslpassword pairs of the key=value form
// ("host=h password='p w'"). URLs are read the way libpq and pgx read
// them: the user info ends at the first '@' before the first '/'.
func RedactDSN(dsn string) string {
	rest, ok := cutURLPrefix(dsn)
	if !ok {
		return rePasswordPair.ReplaceAllString(dsn, "${1}"+redacted)
	}
	prefix := dsn[:len(dsn)-len(rest)]
	if i := strings.IndexAny(rest, "@/"); i >= 0 && rest[i] == '@' {
		if user, _, hasPassword := strings.Cut(rest[:i], ":"); hasPassword {
			rest = user + ":" + redacted + rest[i:]
		}
	}
	if base, query, ok := strings.Cut(rest, "?"); ok {
		params := strings.Split(query, "&")
		for j, p := range params {
			if k, _, _ := strings.Cut(p, "="); secretParam(k) {
				params[j] = k + "=" + redacted
			}
		}
		rest = base + "?" + strings.Join(params, "&")
	}
	return prefix + rest
}

// DSNHasPassword reports whether dsn carries a password or a client key's
// password (see RedactDSN), so the gateway can suggest store.dsn_env.
func DSNHasPassword(dsn string) bool { return RedactDSN(dsn) != dsn }

func secretParam(k string) bool { return k == "password" || k == "sslpassword" }

// rePasswordPair finds the value of a password pair of a key=value DSN:
// quoted with backslash escapes, or up to the next space.
var rePasswordPair = regexp.MustCompile(`(\b(?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'?|\S*)`)

func cutURLPrefix(dsn string) (string, bool) {
	if rest, ok := strings.CutPrefix(dsn, "postgresql://"); ok {
		return rest, true
	}
	return strings.CutPrefix(dsn, "postgres://")
}

// checkDSN returns what is wrong with the form of dsn, or "": a
// postgres:// URL or key=value pairs. The gateway's PostgreSQL driver
// reads the content when it connects. Messages never quote the DSN.
func checkDSN(dsn string) string {
	switch _, isURL := cutURLPrefix(dsn); {
	case isURL:
	case strings.Contains(dsn, "://"):
		return "a URL DSN starts with postgres:// or postgresql://"
	case !strings.Contains(dsn, "="):
		return "must be a postgres:// URL or key=value pairs (host=… dbname=…)"
	}
	if strings.ContainsAny(dsn, "\x00\n") {
		return "must be one line"
	}
	return ""
}
