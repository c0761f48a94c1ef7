package objutil

import (
	"bytes"
	"errors"
	"io"
	"net/url"
	"strings"
	"testing"
	"testing/iotest"
)

func TestCheckKey(t *testing.T) {
	for _, key := range []string{"a", "a/b", "topic/0/00000000000000001000-3-x.seg", "a.b", ".hidden/x", "a..b"} {
		if err := CheckKey(key); err != nil {
			t.Errorf("CheckKey(%q) = %v, want nil", key, err)
		}
	}
	for _, key := range []string{"", "/a", "a/", "a//b", ".", "..", "../a", "a/..", "a/./b", "a\\b", "a\x00b",
		".tierlog-tmp-1", "a/.tierlog-tmp-x", strings.Repeat("k", 1025)} {
		if err := CheckKey(key); err == nil {
			t.Errorf("CheckKey(%q) = nil, want an error", key)
		}
	}
}

func TestCheckPrefix(t *testing.T) {
	for _, p := range []string{"", "a", "a/", "a/b", "a/b/", "a.", "a/b."} {
		if err := CheckPrefix(p); err != nil {
			t.Errorf("CheckPrefix(%q) = %v, want nil", p, err)
		}
	}
	for _, p := range []string{"/", "/a", "a//", "../", "a/../", "..", "a/.", "a\\"} {
		if err := CheckPrefix(p); err == nil {
			t.Errorf("CheckPrefix(%q) = nil, want an error", p)
		}
	}
}

func TestExactReader(t *testing.T) {
	data := []byte("0123456789")
	read := func(body []byte, want int64) ([]byte, error) {
		r := ExactReader(io.NopCloser(iotest.HalfReader(bytes.NewReader(body))), want, "obj")
		defer r.Close()
		return io.ReadAll(r)
	}
	if got, err := read(data, 10); err != nil || !bytes.Equal(got, data) {
		t.Errorf("exact: %q, %v", got, err)
	}
	if got, err := read(nil, 0); err != nil || len(got) != 0 {
		t.Errorf("empty: %q, %v", got, err)
	}
	got, err := read(data[:7], 10)
	if !errors.Is(err, io.ErrUnexpectedEOF) || !strings.Contains(err.Error(), "7 of 10") {
		t.Errorf("short body: %q, %v; want io.ErrUnexpectedEOF after 7 of 10", got, err)
	}
	if got, err := read(data, 8); err == nil || len(got) > 8 {
		t.Errorf("long body: %q, %v; want an error and at most 8 bytes", got, err)
	}
	boom := errors.New("reset")
	r := ExactReader(io.NopCloser(io.MultiReader(bytes.NewReader(data[:3]), iotest.ErrReader(boom))), 10, "obj")
	if _, err := io.ReadAll(r); !errors.Is(err, boom) {
		t.Errorf("failing body: %v, want %v", err, boom)
	}
}

func TestSizedReader(t *testing.T) {
	data := []byte("0123456789")
	for _, tc := range []struct {
		size    int64
		wantErr bool
	}{{10, false}, {0, true}, {9, true}, {11, true}, {100, true}} {
		got, err := io.ReadAll(SizedReader(iotest.OneByteReader(bytes.NewReader(data)), tc.size, "k"))
		if tc.wantErr != (err != nil) {
			t.Errorf("size %d: %q, %v", tc.size, got, err)
		}
		if tc.wantErr && tc.size > 0 && tc.size <= 10 && int64(len(got)) >= tc.size {
			t.Errorf("size %d of a longer reader: handed out all %d bytes before failing", tc.size, len(got))
		}
		if tc.size > 10 && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("size %d of a shorter reader: %v, want io.ErrUnexpectedEOF", tc.size, err)
		}
	}
	if got, err := io.ReadAll(SizedReader(bytes.NewReader(nil), 0, "k")); err != nil || len(got) != 0 {
		t.Errorf("empty: %q, %v", got, err)
	}
}

func TestRedactURL(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"s3://b/p?region=r", "s3://b/p?region=r"},
		{"minio://key:hunter2@h:9000/b/p?secure=false", "minio://key:xxxxx@h:9000/b/p?secure=false"},
		{"s3://b/p?endpoint=http://key:hunter2@h:9000", "s3://b/p?endpoint=http%3A%2F%2Fkey%3Axxxxx%40h%3A9000"},
		{"s3://b/p?endpoint=http://key:hunter2@h:bad", "s3://b/p?endpoint=%28hidden%29"},
	} {
		u, err := url.Parse(c.in)
		if err != nil {
			t.Fatal(err)
		}
		if got := RedactURL(u); got != c.want {
			t.Errorf("RedactURL(%s) = %s, want %s", c.in, got, c.want)
		}
	}
	_, err := url.Parse("s3://key:hunter2@b%zz/p")
	if got := ParseError(err).Error(); strings.Contains(got, "hunter2") || !strings.Contains(got, "invalid URL escape") {
		t.Errorf("ParseError = %q, want the cause without the URL", got)
	}
}

func TestAnswer(t *testing.T) {
	for a, want := range map[Answer]bool{
		{Code: "AccessDenied", Status: 403}:          true,  // S3
		{Status: 403}:                                true,  // a 403 whose body was not read
		{Code: "RequestTimeTooSkewed", Status: 403}:  false, // retried
		{Code: "ExpiredToken", Status: 403}:          false, // retried
		{Code: "SignatureDoesNotMatch", Status: 403}: false,
		{Code: "ObjectLocked", Status: 400}:          true,
		{Code: "InvalidRequest", Message: "Object is WORM protected and cannot be overwritten", Status: 400}: true, // MinIO
		{Code: "InvalidRequest", Message: "Invalid version id specified", Status: 400}:                       false,
		{Code: "NoSuchKey", Status: 404}: false,
		{}:                               false,
	} {
		if got := a.LockRefused(); got != want {
			t.Errorf("%+v.LockRefused() = %v, want %v", a, got, want)
		}
	}
	for a, want := range map[Answer]bool{
		{Code: "AccessDenied", Status: 403}:         true,
		{Status: 403}:                               true,
		{Code: "RequestTimeTooSkewed", Status: 403}: false,
		{Code: "NotImplemented", Status: 501}:       false,
	} {
		if got := a.Denied(); got != want {
			t.Errorf("%+v.Denied() = %v, want %v", a, got, want)
		}
	}
	for a, want := range map[Answer]bool{
		{Code: "ObjectLockConfigurationNotFoundError", Status: 404}: true, // bucket without Object Lock
		{Code: "NoSuchObjectLockConfiguration", Status: 404}:        true, // version without retention
		{Code: "NoSuchKey", Status: 404}:                            false,
		{}:                                                          false,
	} {
		if got := a.NoLockConfig(); got != want {
			t.Errorf("%+v.NoLockConfig() = %v, want %v", a, got, want)
		}
	}
}
