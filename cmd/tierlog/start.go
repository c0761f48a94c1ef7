package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// startKind is where consume starts reading each partition.
type startKind int

const (
	startEarliest startKind = iota // the first record still held
	startLatest                    // the log end: only records appended later
	startOffset                    // a given offset
	startLastN                     // the last N records (kcat's -o -N)
)

// startPos is a parsed --offset.
type startPos struct {
	kind startKind
	n    int64 // the offset (startOffset) or the count (startLastN)
}

// offsetValid is what --offset accepts, for its help and its errors.
const offsetValid = "beginning, end, an offset N (0 or more) or -N (the last N records of each partition)"

// parseOffset parses --offset the way kcat's -o reads it: beginning (or
// rpk's start), end, an absolute offset, or -N for the last N records.
func parseOffset(s string) (startPos, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "beginning", "start":
		return startPos{kind: startEarliest}, nil
	case "end":
		return startPos{kind: startLatest}, nil
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	switch {
	case err != nil:
		return startPos{}, fmt.Errorf("--offset %q: want %s", s, offsetValid)
	case n < 0:
		return startPos{kind: startLastN, n: -n}, nil
	case strings.HasPrefix(strings.TrimSpace(s), "-"): // "-0": the last none
		return startPos{kind: startLatest}, nil
	}
	return startPos{kind: startOffset, n: n}, nil
}

// sinceValid is what --since accepts, for its help and its errors.
const sinceValid = "a duration back from now (30s, 30m, 1h, 7d, 1d12h), a date (2026-11-30, midnight local time) or an RFC 3339 time (2026-11-30T12:00:00Z)"

// parseSince parses --since: a duration before now (Go's units plus d for
// 24 hours, as the nats CLI and journalctl take it), a date at local
// midnight in loc, or an RFC 3339 time.
func parseSince(s string, now time.Time, loc *time.Location) (time.Time, error) {
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.ParseInLocation(time.DateOnly, s, loc); err == nil {
		return t, nil
	}
	if d, ok := parseAgo(s); ok {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("--since %q: want %s", s, sinceValid)
}

// parseAgo parses a non-negative duration with an optional leading whole
// number of days ("7d", "1d12h"); the rest is time.ParseDuration's.
func parseAgo(s string) (time.Duration, bool) {
	var days int64
	if head, rest, ok := strings.Cut(s, "d"); ok {
		n, err := strconv.ParseInt(head, 10, 64)
		if err != nil || n < 0 || n > 100_000 {
			return 0, false
		}
		days, s = n, rest
		if s == "" {
			return time.Duration(days) * 24 * time.Hour, true
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 || strings.HasPrefix(s, "+") {
		return 0, false
	}
	return time.Duration(days)*24*time.Hour + d, true
}
