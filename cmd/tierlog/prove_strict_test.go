package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// TestProveStrictFieldsBothVerifiers: tierlog verify-proof and the
// independent Python verifier accept a proof file as prove writes it and
// refuse the same altered ones - a field name in another case, a field
// twice, an unknown or missing field at any level, a null or a value of
// another type where the format has none - so an auditor's script and
// tierlog never read one file as two proofs.
func TestProveStrictFieldsBothVerifiers(t *testing.T) {
	t.Parallel()
	ps, pub := review10bProofs(t, 5, 3)
	good, err := json.Marshal(ps[0])
	if err != nil {
		t.Fatal(err)
	}
	s := string(good)
	dir := t.TempDir()
	run := func(name, file string) (goCode, pyCode int, out string) {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".json")
		writeFile(t, path, file)
		r := runCLI(t, nil, "", "verify-proof", path, "--public-key", pub)
		pyCode, pyOut := pyVerify(t, path, pub)
		return r.code, pyCode, r.stdout + r.stderr + " | python: " + pyOut
	}
	if g, p, out := run("as written", s); g != 0 || p != 0 {
		t.Fatalf("the proof file as prove writes it: tierlog exit %d, python exit %d: %s", g, p, out)
	}
	rep := func(old, new string) string {
		if !strings.Contains(s, old) {
			t.Fatalf("%q is not in %s", old, s)
		}
		return strings.Replace(s, old, new, 1)
	}
	for _, c := range []struct{ name, file string }{
		{"upper-case twin", rep(`"offset":3,`, `"offset":3,"OFFSET":3,`)},
		{"case variant alone", rep(`"offset":3,`, `"Offset":3,`)},
		{"field twice", rep(`"offset":3,`, `"offset":3,"offset":3,`)},
		{"record field twice", rep(`"control":false`, `"control":false,"control":false`)},
		{"record case variant", rep(`"control":false`, `"CONTROL":false`)},
		{"unknown header field", rep(`{"key":"aA==",`, `{"key":"aA==","approved_by":"x",`)},
		{"header key twice", rep(`{"key":"aA==",`, `{"key":"aA==","key":"aA==",`)},
		{"missing control", rep(`,"control":false`, ``)},
		{"control a number", rep(`"control":false`, `"control":0`)},
		{"offset a float", rep(`"offset":3,`, `"offset":3.0,`)},
		{"offset a bool", rep(`"partition":0,`, `"partition":false,`)},
		{"null headers", rep(`"headers":[{"key":"aA==","value":"dg=="}]`, `"headers":null`)},
		{"null header key", rep(`{"key":"aA==",`, `{"key":null,`)},
		{"unknown top-level field", rep(`"offset":3,`, `"offset":3,"approved_by":"x",`)},
	} {
		if g, p, out := run(c.name, c.file); g != 1 || p != 1 {
			t.Errorf("%s: tierlog exit %d, python exit %d, want both 1 (refused): %s", c.name, g, p, out)
		}
	}
}
