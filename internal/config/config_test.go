package config

import (
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// load parses args into a fresh flag set and resolves the configuration.
func load(t *testing.T, args, environ []string, files map[string]string) (Server, error) {
	t.Helper()
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parse %v: %v", args, err)
	}
	return Load(Sources{Flags: fs, Environ: environ, ReadFile: func(name string) ([]byte, error) {
		if s, ok := files[name]; ok {
			return []byte(s), nil
		}
		return nil, &os.PathError{Op: "open", Path: name, Err: os.ErrNotExist}
	}})
}

func mustLoad(t *testing.T, args, environ []string, files map[string]string) Server {
	t.Helper()
	cfg, err := load(t, args, environ, files)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return cfg
}

func TestDefaults(t *testing.T) {
	cfg := mustLoad(t, nil, []string{"HOME=/root", "TIERLOG_DATA_DIR="}, nil)
	want := Default()
	if cfg.DataDir != "./data" || cfg.GRPCAddr != "127.0.0.1:7070" || cfg.HTTPAddr != "127.0.0.1:7071" ||
		cfg.LogFormat != want.LogFormat || cfg.LogLevel != want.LogLevel || cfg.ShutdownTimeout != want.ShutdownTimeout ||
		cfg.ReadyFile != "" || len(cfg.TopicDefaults) != 0 {
		t.Fatalf("defaults: got %+v, want %+v", cfg, want)
	}
}

// TestPrecedence sets each setting at several levels and checks that the
// highest one wins: flag > env > file > default.
func TestPrecedence(t *testing.T) {
	file := `
data_dir: /file/data
grpc_addr: 10.0.0.1:1
http_addr: 10.0.0.1:2
log_level: debug
topic_defaults:
  segment.bytes: 1000
  retention.ms: 5000
  flush.policy: os
`
	files := map[string]string{"/etc/tierlog.yaml": file}
	environ := []string{
		"TIERLOG_CONFIG=/etc/tierlog.yaml",
		"TIERLOG_GRPC_ADDR=10.0.0.2:1",
		"TIERLOG_HTTP_ADDR=10.0.0.2:2",
		"TIERLOG_DEFAULT_RETENTION_MS=6000",
		"TIERLOG_DEFAULT_FLUSH_POLICY=interval",
	}
	args := []string{"--http-addr", "10.0.0.3:2", "--default", "flush.policy=always"}
	cfg := mustLoad(t, args, environ, files)

	checks := []struct{ what, got, want string }{
		{"data_dir (file)", cfg.DataDir, "/file/data"},
		{"grpc_addr (env over file)", cfg.GRPCAddr, "10.0.0.2:1"},
		{"http_addr (flag over env over file)", cfg.HTTPAddr, "10.0.0.3:2"},
		{"log_level (file over default)", cfg.LogLevel, "debug"},
		{"log_format (default)", cfg.LogFormat, "text"},
		{"segment.bytes (file)", cfg.TopicDefaults["segment.bytes"], "1000"},
		{"retention.ms (env over file)", cfg.TopicDefaults["retention.ms"], "6000"},
		{"flush.policy (flag over env over file)", cfg.TopicDefaults["flush.policy"], "always"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %q, want %q", c.what, c.got, c.want)
		}
	}
	if len(cfg.TopicDefaults) != 3 {
		t.Errorf("topic defaults: got %v, want 3 keys", cfg.TopicDefaults)
	}
}

func TestConfigFlagOverridesConfigEnv(t *testing.T) {
	files := map[string]string{"/a.yaml": "data_dir: /a\n", "/b.yaml": "data_dir: /b\n"}
	cfg := mustLoad(t, []string{"--config", "/b.yaml"}, []string{"TIERLOG_CONFIG=/a.yaml"}, files)
	if cfg.DataDir != "/b" {
		t.Fatalf("data_dir: got %q, want /b (from the file named by --config)", cfg.DataDir)
	}
}

func TestRealFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tierlog.yaml")
	if err := os.WriteFile(path, []byte("shutdown_timeout: 3s\nready_file: /tmp/r.json\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	BindFlags(fs)
	if err := fs.Parse([]string{"--config=" + path}); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(Sources{Flags: fs})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ShutdownTimeout != 3*time.Second || cfg.ReadyFile != "/tmp/r.json" {
		t.Fatalf("got %+v", cfg)
	}
}

func TestErrors(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		environ []string
		file    string
		want    []string // substrings of the error
	}{
		{"unknown YAML key", nil, nil, "dat_dir: /x\n", []string{"/c.yaml", "line 1", `unknown key "dat_dir"`, "valid: data_dir"}},
		{"bad YAML", nil, nil, "data_dir: [\n", []string{"/c.yaml", "parse YAML"}},
		{"YAML not a mapping", nil, nil, "- a\n", []string{"want a mapping"}},
		{"YAML list value", nil, nil, "data_dir: [a]\n", []string{"data_dir: want a single value"}},
		{"topic_defaults not a mapping", nil, nil, "topic_defaults: 3\n", []string{"topic_defaults", "want a mapping"}},
		{"bad log level in file", nil, nil, "log_level: loud\n", []string{"line 1", "log_level", `"loud" is not a log level`, "debug, info, warn, error"}},
		{"bad log format in env", nil, []string{"TIERLOG_LOG_FORMAT=xml"}, "", []string{"env TIERLOG_LOG_FORMAT", "text, json"}},
		{"bad addr flag", []string{"--grpc-addr", "nope"}, nil, "", []string{"flag --grpc-addr", `"nope" is not host:port`}},
		{"bad duration", []string{"--shutdown-timeout", "-1s"}, nil, "", []string{"flag --shutdown-timeout", "positive duration"}},
		{"bad default flag", []string{"--default", "segment.bytes"}, nil, "", []string{"flag --default", "want key=value"}},
		{"empty data dir flag", []string{"--data-dir="}, nil, "", []string{"flag --data-dir", "must not be empty"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			files := map[string]string{}
			environ := c.environ
			if c.file != "" {
				files["/c.yaml"] = c.file
				environ = append(environ, "TIERLOG_CONFIG=/c.yaml")
			}
			_, err := load(t, c.args, environ, files)
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestMissingFile(t *testing.T) {
	_, err := load(t, []string{"--config", "/nope.yaml"}, nil, nil)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "flag --config") {
		t.Fatalf("got %v, want a not-exist error naming flag --config", err)
	}
}

func TestEmptyFile(t *testing.T) {
	for _, body := range []string{"", "# nothing\n", "~\n", "topic_defaults:\n"} {
		cfg := mustLoad(t, []string{"--config", "/e.yaml"}, nil, map[string]string{"/e.yaml": body})
		if cfg.DataDir != "./data" {
			t.Errorf("file %q: data_dir %q, want the default", body, cfg.DataDir)
		}
	}
}

// TestYAMLRoundTrip checks that YAML() renders a file Load reads back to the
// same configuration.
func TestYAMLRoundTrip(t *testing.T) {
	in := mustLoad(t, []string{"--data-dir", "/d: x", "--log-format", "json", "--default", "segment.bytes=123", "--default", "flush.policy=os"}, nil, nil)
	out, err := in.YAML()
	if err != nil {
		t.Fatal(err)
	}
	back := mustLoad(t, []string{"--config", "/o.yaml"}, nil, map[string]string{"/o.yaml": string(out)})
	a, _ := in.YAML()
	b, _ := back.YAML()
	if string(a) != string(b) {
		t.Fatalf("round trip differs:\n%s\n---\n%s", a, b)
	}
	if !strings.Contains(string(out), "topic_defaults:\n    flush.policy: os\n    segment.bytes: \"123\"\n") {
		t.Errorf("rendered YAML:\n%s", out)
	}
}

func TestEnvKeyMapping(t *testing.T) {
	for _, k := range []string{"segment.bytes", "max.message.bytes", "local.retention.ms"} {
		if got := topicKeyFromEnv(topicEnvKey(k)); got != k {
			t.Errorf("%s -> %s -> %s", k, topicEnvKey(k), got)
		}
	}
}

func TestLogValue(t *testing.T) {
	cfg := mustLoad(t, []string{"--default", "segment.bytes=9"}, nil, nil)
	var b strings.Builder
	slog.New(slog.NewTextHandler(&b, nil)).Info("config", "config", cfg)
	for _, w := range []string{"config.data_dir=./data", "config.grpc_addr=127.0.0.1:7070", "config.topic_defaults.segment.bytes=9"} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("log line %q lacks %q", b.String(), w)
		}
	}
}

// TestLogValueHidesURLPasswords: a password put in the bucket URL by
// mistake never reaches the log; the rest of the URL does.
func TestLogValueHidesURLPasswords(t *testing.T) {
	for _, c := range []struct{ bucket, want string }{
		{"minio://key:topsecret@h:9000/b/p?secure=false", "minio://key:xxxxx@h:9000/b/p?secure=false"},
		{"s3://b/p?endpoint=http://key:topsecret@h:9000&region=r", "endpoint=http%3A%2F%2Fkey%3Axxxxx%40h%3A9000"},
		{"s3://b/p?endpoint=http://key:topsecret@h:bad", "endpoint=%28hidden%29"},
		{"s3://b/p?endpoint=http://h:9000", "s3://b/p?endpoint=http://h:9000"},
		{"file:///var/lib/tierlog/bucket", "file:///var/lib/tierlog/bucket"},
		{"none", "none"},
		{"%zz:topsecret", "(unparseable URL)"},
	} {
		cfg := mustLoad(t, []string{"--bucket", c.bucket}, nil, nil)
		var b strings.Builder
		slog.New(slog.NewTextHandler(&b, nil)).Info("config", "config", cfg)
		if strings.Contains(b.String(), "topsecret") || !strings.Contains(b.String(), c.want) {
			t.Errorf("bucket %s logged as %q; want %q and no password", c.bucket, b.String(), c.want)
		}
	}
}

// offsets_retention_minutes defaults to Kafka's 7 days and is set like the
// other settings; 0 is refused (offsets would expire at once).
func TestOffsetsRetentionMinutes(t *testing.T) {
	if got := mustLoad(t, nil, nil, nil).OffsetsRetentionMinutes; got != 7*24*60 {
		t.Errorf("default: %d minutes, want 10080", got)
	}
	files := map[string]string{"/c.yaml": "offsets_retention_minutes: 60\n"}
	if got := mustLoad(t, nil, []string{"TIERLOG_CONFIG=/c.yaml"}, files).OffsetsRetentionMinutes; got != 60 {
		t.Errorf("from the file: %d", got)
	}
	if got := mustLoad(t, []string{"--offsets-retention-minutes", "5"}, []string{"TIERLOG_CONFIG=/c.yaml"}, files).OffsetsRetentionMinutes; got != 5 {
		t.Errorf("flag over file: %d", got)
	}
	if _, err := load(t, []string{"--offsets-retention-minutes", "0"}, nil, nil); err == nil {
		t.Error("offsets_retention_minutes 0 accepted")
	}
}
