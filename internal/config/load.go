package config

import (
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"

	"github.com/tierlog/tierlog/internal/urlredact"
)

// BindFlags registers one flag per setting on fs, plus --config FILE and the
// repeatable --default key=value. Flag defaults shown in help are the
// built-in defaults; Load decides what actually applies.
func BindFlags(fs *pflag.FlagSet) {
	def := Default()
	for _, s := range settings {
		typ := s.typ
		if typ == "" {
			typ = "string"
		}
		fs.Var(&flagValue{v: s.get(&def), typ: typ}, s.flag(), s.usage+" (env "+s.env()+")")
		if typ == "bool" {
			// --auto-create-topics-enable alone means true, as a bool flag.
			fs.Lookup(s.flag()).NoOptDefVal = "true"
		}
	}
	fs.String(configSetting, "", "YAML configuration file (env "+envPrefix+"CONFIG); flags and env override it")
	fs.StringArray(defaultFlag, nil, "server-wide topic default as key=value, e.g. segment.bytes=1048576 or flush.policy=always; repeatable (env "+envDefaultPrefix+"<KEY>, e.g. "+topicEnvKey("segment.bytes")+")")
}

// flagValue holds a setting's flag text until Load checks it with the
// setting's own parser (so a flag, the environment and the file accept the
// same forms and fail with the same message); typ is what help shows.
type flagValue struct{ v, typ string }

func (f *flagValue) String() string     { return f.v }
func (f *flagValue) Set(v string) error { f.v = v; return nil }
func (f *flagValue) Type() string       { return f.typ }

// Sources are the inputs of Load.
type Sources struct {
	// Flags is a flag set prepared with BindFlags and parsed; only flags
	// given on the command line override other sources. Nil means none.
	Flags *pflag.FlagSet
	// Environ is the environment in os.Environ form ("KEY=value"). Variables
	// set to the empty string count as unset.
	Environ []string
	// ReadFile reads the YAML file; nil means os.ReadFile.
	ReadFile func(name string) ([]byte, error)
}

// Load resolves the configuration: defaults, then the YAML file, then
// TIERLOG_* variables, then flags, each overriding the one before. Errors
// name the source and the setting that failed.
func Load(src Sources) (Server, error) {
	cfg := Default()
	env := parseEnviron(src.Environ)

	path, pathFrom := env[envPrefix+"CONFIG"], "env "+envPrefix+"CONFIG"
	if f := changedFlag(src.Flags, configSetting); f != nil {
		path, pathFrom = f.Value.String(), "flag --config"
	}
	if path != "" {
		read := src.ReadFile
		if read == nil {
			read = os.ReadFile
		}
		data, err := read(path)
		if err != nil {
			return Server{}, fmt.Errorf("config: read file %s (from %s): %w", path, pathFrom, err)
		}
		if err := applyYAML(&cfg, data); err != nil {
			return Server{}, fmt.Errorf("config: file %s: %w", path, err)
		}
	}

	for _, s := range settings {
		if v, ok := env[s.env()]; ok {
			if err := s.set(&cfg, v); err != nil {
				return Server{}, fmt.Errorf("config: env %s: %w", s.env(), err)
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(env)) {
		if strings.HasPrefix(name, envDefaultPrefix) && len(name) > len(envDefaultPrefix) {
			cfg.TopicDefaults[topicKeyFromEnv(name)] = env[name]
		}
	}

	for _, s := range settings {
		if f := changedFlag(src.Flags, s.flag()); f != nil {
			if err := s.set(&cfg, f.Value.String()); err != nil {
				return Server{}, fmt.Errorf("config: flag --%s: %w", s.flag(), err)
			}
		}
	}
	if changedFlag(src.Flags, defaultFlag) != nil {
		kvs, err := src.Flags.GetStringArray(defaultFlag)
		if err != nil {
			return Server{}, fmt.Errorf("config: flag --%s: %w", defaultFlag, err)
		}
		for _, kv := range kvs {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return Server{}, fmt.Errorf("config: flag --%s %q: want key=value, e.g. segment.bytes=1048576", defaultFlag, kv)
			}
			cfg.TopicDefaults[k] = v
		}
	}
	return cfg, nil
}

func changedFlag(fs *pflag.FlagSet, name string) *pflag.Flag {
	if fs == nil {
		return nil
	}
	f := fs.Lookup(name)
	if f == nil || !f.Changed {
		return nil
	}
	return f
}

// parseEnviron keeps the non-empty TIERLOG_* variables.
func parseEnviron(environ []string) map[string]string {
	env := make(map[string]string)
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if ok && v != "" && strings.HasPrefix(k, envPrefix) {
			env[k] = v
		}
	}
	return env
}

// applyYAML overlays a YAML document on cfg. Unknown keys are errors, so a
// typo does not silently leave a default in place.
func applyYAML(cfg *Server, data []byte) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("parse YAML: %w", err)
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil // empty file or only comments
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return nil
	}
	if root.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: want a mapping of settings (e.g. data_dir: ./data)", root.Line)
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if k.Value == topicDefaultsKey {
			if err := applyYAMLTopicDefaults(cfg, v); err != nil {
				return err
			}
			continue
		}
		s, ok := findSetting(k.Value)
		if !ok {
			return fmt.Errorf("line %d: unknown key %q (valid: %s)", k.Line, k.Value, validKeys())
		}
		if v.Kind != yaml.ScalarNode {
			return fmt.Errorf("line %d: %s: want a single value", v.Line, k.Value)
		}
		if err := s.set(cfg, v.Value); err != nil {
			return fmt.Errorf("line %d: %s: %w", v.Line, k.Value, err)
		}
	}
	return nil
}

func applyYAMLTopicDefaults(cfg *Server, n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: %s: want a mapping of topic configs (e.g. segment.bytes: 1048576)", n.Line, topicDefaultsKey)
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if v.Kind != yaml.ScalarNode {
			return fmt.Errorf("line %d: %s.%s: want a single value", v.Line, topicDefaultsKey, k.Value)
		}
		cfg.TopicDefaults[k.Value] = v.Value
	}
	return nil
}

func findSetting(name string) (setting, bool) {
	for _, s := range settings {
		if s.name == name {
			return s, true
		}
	}
	return setting{}, false
}

func validKeys() string {
	keys := make([]string, 0, len(settings)+1)
	for _, s := range settings {
		keys = append(keys, s.name)
	}
	return strings.Join(append(keys, topicDefaultsKey), ", ")
}

// YAML renders the configuration as a file Load would read back to the same
// values: settings in table order, then topic_defaults sorted by key.
func (c Server) YAML() ([]byte, error) {
	root := &yaml.Node{Kind: yaml.MappingNode}
	scalar := func(v string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Value: v} }
	for _, s := range settings {
		root.Content = append(root.Content, scalar(s.name), &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s.get(&c)})
	}
	td := &yaml.Node{Kind: yaml.MappingNode}
	for _, k := range slices.Sorted(maps.Keys(c.TopicDefaults)) {
		td.Content = append(td.Content, scalar(k), &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: c.TopicDefaults[k]})
	}
	root.Content = append(root.Content, scalar(topicDefaultsKey), td)
	out, err := yaml.Marshal(root)
	if err != nil {
		return nil, fmt.Errorf("config: render YAML: %w", err)
	}
	return out, nil
}

// LogValue lets the configuration be logged as one structured group. No
// setting is meant to be secret (credentials come from each SDK's
// environment), but a bucket URL may carry a password by mistake: it is
// logged with passwords hidden. A setting that is secret must be left out
// here.
func (c Server) LogValue() slog.Value {
	attrs := make([]slog.Attr, 0, len(settings)+1)
	for _, s := range settings {
		v := s.get(&c)
		if s.name == "bucket" {
			v = urlredact.String(v)
		}
		attrs = append(attrs, slog.String(s.name, v))
	}
	td := make([]any, 0, len(c.TopicDefaults))
	for _, k := range slices.Sorted(maps.Keys(c.TopicDefaults)) {
		td = append(td, slog.String(k, c.TopicDefaults[k]))
	}
	attrs = append(attrs, slog.Group(topicDefaultsKey, td...))
	return slog.GroupValue(attrs...)
}
