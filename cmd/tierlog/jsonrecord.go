package main

import (
	"encoding/base64"
	"strconv"
	"time"
	"unicode/utf8"

	tierlogv1 "github.com/tierlog/tierlog/api/tierlogv1"
)

// timestampLayout is RFC 3339 with exactly three fractional digits, so
// records print with a fixed-width, sortable timestamp.
const timestampLayout = "2006-01-02T15:04:05.000Z07:00"

// appendJSONRecord appends one record as a JSON object and a newline. It is
// written field by field (rather than with json.Marshal of a struct) to
// keep the field order fixed and to tell null, text and binary apart.
func appendJSONRecord(b []byte, partition int32, r *tierlogv1.Record) []byte {
	b = append(b, `{"partition":`...)
	b = strconv.AppendInt(b, int64(partition), 10)
	b = append(b, `,"offset":`...)
	b = strconv.AppendInt(b, r.GetOffset(), 10)
	b = append(b, `,"timestamp":"`...)
	b = time.UnixMilli(r.GetTimestampMs()).UTC().AppendFormat(b, timestampLayout)
	b = append(b, '"', ',')
	b = appendBytesField(b, "key", r.Key)
	b = append(b, ',')
	b = appendBytesField(b, "value", r.Value)
	b = append(b, `,"headers":[`...)
	for i, h := range r.GetHeaders() {
		if i > 0 {
			b = append(b, ',')
		}
		// Header keys are bytes in Kafka too: "key_base64" if not UTF-8
		// (the API carries such a key in key_bytes).
		key := []byte(h.GetKey())
		if h.KeyBytes != nil {
			key = h.KeyBytes
		}
		b = append(b, '{')
		b = appendBytesField(b, "key", key)
		b = append(b, ',')
		b = appendBytesField(b, "value", h.Value)
		b = append(b, '}')
	}
	return append(b, "]}\n"...)
}

// appendBytesField writes "name":null for nil, "name":"text" for valid
// UTF-8 and "name_base64":"..." for anything else, so no byte is lost.
func appendBytesField(b []byte, name string, v []byte) []byte {
	switch {
	case v == nil:
		return append(append(append(b, '"'), name...), `":null`...)
	case utf8.Valid(v):
		b = append(append(append(b, '"'), name...), `":`...)
		return appendJSONString(b, string(v))
	default:
		b = append(append(append(b, '"'), name...), `_base64":"`...)
		b = base64.StdEncoding.AppendEncode(b, v)
		return append(b, '"')
	}
}

// appendJSONString appends s, which must be valid UTF-8, as a JSON string.
// Only what JSON requires is escaped (quote, backslash, control
// characters), so values read as they were produced.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\r':
			b = append(b, '\\', 'r')
		case c == '\t':
			b = append(b, '\\', 't')
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
