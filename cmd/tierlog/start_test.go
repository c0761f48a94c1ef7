package main

import (
	"strings"
	"testing"
	"time"
)

func TestParseOffset(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want startPos
	}{
		{"0", startPos{kind: startOffset}},
		{"42", startPos{kind: startOffset, n: 42}},
		{"-5", startPos{kind: startLastN, n: 5}},
		{"-0", startPos{kind: startLatest}},
		{"end", startPos{kind: startLatest}},
		{"END", startPos{kind: startLatest}},
		{"beginning", startPos{kind: startEarliest}},
		{"start", startPos{kind: startEarliest}},
	} {
		got, err := parseOffset(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("parseOffset(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "latest-ish", "1.5", "e", "--3", "99999999999999999999"} {
		_, err := parseOffset(bad)
		if err == nil || !strings.Contains(err.Error(), "--offset") || !strings.Contains(err.Error(), "-N (the last N") {
			t.Errorf("parseOffset(%q): %v, want an error naming --offset and what is valid", bad, err)
		}
	}
}

func TestParseSince(t *testing.T) {
	loc := time.FixedZone("UTC+2", 2*3600)
	now := time.Date(2026, 12, 1, 10, 30, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Time
	}{
		{"1h", now.Add(-time.Hour)},
		{"30m", now.Add(-30 * time.Minute)},
		{"90s", now.Add(-90 * time.Second)},
		{"7d", now.Add(-7 * 24 * time.Hour)},
		{"1d12h", now.Add(-36 * time.Hour)},
		{"0s", now},
		{"2026-11-30", time.Date(2026, 11, 30, 0, 0, 0, 0, loc)},
		{"2026-11-30T12:00:00Z", time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)},
		{"2026-11-30T12:00:00.250+01:00", time.Date(2026, 11, 30, 11, 0, 0, 250e6, time.UTC)},
	} {
		got, err := parseSince(tc.in, now, loc)
		if err != nil || !got.Equal(tc.want) {
			t.Errorf("parseSince(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "yesterday", "-1h", "+1h", "1x", "d", "7dd", "-7d", "2026-13-01", "2026-11-30 12:00"} {
		_, err := parseSince(bad, now, loc)
		if err == nil || !strings.Contains(err.Error(), "--since") || !strings.Contains(err.Error(), "7d") {
			t.Errorf("parseSince(%q): %v, want an error naming --since and what is valid", bad, err)
		}
	}
}
