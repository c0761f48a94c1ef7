// Package config resolves the settings of `tierlog serve` from four sources,
// in this order of precedence (highest first):
//
//  1. command-line flags (only flags actually given count),
//  2. environment variables TIERLOG_<SETTING>,
//  3. an optional YAML file (--config FILE or TIERLOG_CONFIG),
//  4. built-in defaults.
//
// Every setting is declared once, in the settings table (settings.go); its
// flag name, environment variable and YAML key are derived from that one
// name, so the three spellings cannot drift apart:
//
//	flag        env                  YAML
//	--data-dir  TIERLOG_DATA_DIR     data_dir
//
// Server-wide topic defaults (the Kafka-named topic configs such as
// segment.bytes or flush.policy) are merged key by key with the same
// precedence:
//
//	flag  --default segment.bytes=1048576   (repeatable)
//	env   TIERLOG_DEFAULT_SEGMENT_BYTES=1048576
//	YAML  topic_defaults: {segment.bytes: 1048576}
//
// The environment spelling upper-cases the key and replaces dots with
// underscores; every topic config key uses only dots and lower-case letters,
// so the mapping is reversible. This package checks only the shape of topic
// defaults (key=value); their names and values are validated by the broker
// (broker.ParseTopicConfig), which owns them.
//
// Usage:
//
//	fs := cmd.Flags()
//	config.BindFlags(fs)
//	...
//	cfg, err := config.Load(config.Sources{Flags: fs, Environ: os.Environ()})
package config
