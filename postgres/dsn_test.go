package postgres

import (
	"strings"
	"testing"
)

func TestRedactDSN(t *testing.T) {
	cases := []struct{ in, secret string }{
		{"postgres://postgres:s3cret@127.0.0.1:5432/moray", "s3cret"},
		{"postgresql://u:p%40ss@h/db?sslmode=disable", "p%40ss"},
		{"postgres://u@h/db?password=hunter2", "hunter2"},
		{"host=h user=u password=hunter2 dbname=moray", "hunter2"},
		{"host=h password='a b\\' c' dbname=moray", "a b"},
	}
	for _, c := range cases {
		got := RedactDSN(c.in)
		if strings.Contains(got, c.secret) {
			t.Errorf("RedactDSN(%q) = %q still holds the password", c.in, got)
		}
		if !strings.Contains(got, "xxxxx") {
			t.Errorf("RedactDSN(%q) = %q: no redaction marker", c.in, got)
		}
	}
	if got := RedactDSN("postgres://u@h:5/db"); got != "postgres://u@h:5/db" {
		t.Errorf("DSN without password changed: %q", got)
	}
}

func TestCheckDSNHidesPassword(t *testing.T) {
	err := CheckDSN("postgres://u:topsecret@h:notaport/db")
	if err == nil {
		t.Fatal("bad port accepted")
	}
	if strings.Contains(err.Error(), "topsecret") {
		t.Fatalf("error leaks password: %v", err)
	}
	if err := CheckDSN("postgres://u:pw@127.0.0.1:5432/moray"); err != nil {
		t.Fatalf("good DSN refused: %v", err)
	}
}

func TestSplitPassword(t *testing.T) {
	for _, dsn := range []string{"postgres://u:s3cret@h:5432/db?sslmode=disable", "host=h user=u password=s3cret dbname=db"} {
		bare, pw, err := splitPassword(dsn)
		if err != nil || pw != "s3cret" || strings.Contains(bare, "s3cret") || !strings.Contains(bare, "h") {
			t.Errorf("splitPassword(%q) = %q, %q, %v", dsn, bare, pw, err)
		}
	}
}
