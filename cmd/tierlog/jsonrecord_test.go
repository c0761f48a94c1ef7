package main

import (
	"encoding/json"
	"testing"

	tierlogv1 "github.com/tierlog/tierlog/api/tierlogv1"
)

func TestAppendJSONRecord(t *testing.T) {
	r := &tierlogv1.Record{
		Offset: 7, TimestampMs: 1700000000123,
		Key:   nil,
		Value: []byte("a \"q\" \\ <b>&\n\t\x01 ✓"),
		Headers: []*tierlogv1.Header{
			{Key: "bin", Value: []byte{0xff, 0x00}},
			{Key: "null"},
			{Key: "empty", Value: []byte{}},
			{KeyBytes: []byte("\xfe"), Value: []byte("x")},
		},
	}
	got := string(appendJSONRecord(nil, 3, r))
	want := `{"partition":3,"offset":7,"timestamp":"2023-11-14T22:13:20.123Z","key":null,"value":"a \"q\" \\ <b>&\n\t\u0001 ✓",` +
		`"headers":[{"key":"bin","value_base64":"/wA="},{"key":"null","value":null},{"key":"empty","value":""},{"key_base64":"/g==","value":"x"}]}` + "\n"
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	var back map[string]any
	if err := json.Unmarshal([]byte(got), &back); err != nil {
		t.Fatalf("not valid JSON: %v", err)
	}
	if back["value"] != string(r.Value) {
		t.Errorf("value decodes to %q, want %q", back["value"], r.Value)
	}
}
