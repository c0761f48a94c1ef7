package kafka

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tierlog/tierlog/broker"
)

// DescribeConfigs, IncrementalAlterConfigs and AlterConfigs. A topic has
// exactly the keys broker.ConfigKeys lists; each key's source says where
// its value comes from: the topic itself (DYNAMIC_TOPIC_CONFIG), the
// server's topic_defaults (STATIC_BROKER_CONFIG, as Kafka calls
// server.properties) or tierlog's built-in default (DEFAULT_CONFIG). The
// broker resource is this node's handful of Kafka-facing settings, all
// read-only: tierlog has no dynamic broker configs.

// configTypes are the Kafka types of the topic keys (v3+ ConfigType);
// a key not listed is a STRING.
var configTypes = map[string]kmsg.ConfigType{
	"segment.bytes":         kmsg.ConfigTypeInt,
	"max.message.bytes":     kmsg.ConfigTypeInt,
	"segment.ms":            kmsg.ConfigTypeLong,
	"retention.ms":          kmsg.ConfigTypeLong,
	"retention.bytes":       kmsg.ConfigTypeLong,
	"flush.messages":        kmsg.ConfigTypeLong,
	"flush.ms":              kmsg.ConfigTypeLong,
	"local.retention.ms":    kmsg.ConfigTypeLong,
	"local.retention.bytes": kmsg.ConfigTypeLong,
	"local.disk.max.bytes":  kmsg.ConfigTypeLong,
	"remote.storage.enable": kmsg.ConfigTypeBoolean,

	"remote.object.lock.days":       kmsg.ConfigTypeInt,
	"remote.object.lock.legal.hold": kmsg.ConfigTypeBoolean,
}

// configEntry is one topic key as Kafka describes it.
type configEntry struct {
	name, value string
	source      kmsg.ConfigSource
	// synonyms, most to least specific: the value the topic sets, the
	// server's default, the built-in default (those that apply).
	synonyms []kmsg.DescribeConfigsResponseResourceConfigConfigSynonym
}

// topicConfigEntries describes every key of a topic whose effective values
// are config and whose own settings are overrides, sorted by key.
func (s *Server) topicConfigEntries(config, overrides map[string]string) []configEntry {
	server := s.b.TopicDefaults().Map()
	builtin := broker.DefaultTopicConfig().Map()
	out := make([]configEntry, 0, len(config))
	for _, k := range slices.Sorted(maps.Keys(config)) {
		e := configEntry{name: k, value: config[k], source: kmsg.ConfigSourceDefaultConfig}
		syn := func(v string, src kmsg.ConfigSource, name string) {
			y := kmsg.NewDescribeConfigsResponseResourceConfigConfigSynonym()
			y.Name, y.Value, y.Source = name, &v, src
			e.synonyms = append(e.synonyms, y)
		}
		if v, ok := overrides[k]; ok {
			e.source = kmsg.ConfigSourceDynamicTopicConfig
			syn(v, kmsg.ConfigSourceDynamicTopicConfig, k)
		}
		if server[k] != builtin[k] {
			if e.source == kmsg.ConfigSourceDefaultConfig {
				e.source = kmsg.ConfigSourceStaticBrokerConfig
			}
			syn(server[k], kmsg.ConfigSourceStaticBrokerConfig, "topic_defaults."+k)
		}
		syn(builtin[k], kmsg.ConfigSourceDefaultConfig, k)
		out = append(out, e)
	}
	return out
}

// describeConfigs answers for topics and for this node's broker resource.
func (s *Server) describeConfigs(_ *clientConn, req *kmsg.DescribeConfigsRequest) reply {
	resp := req.ResponseKind().(*kmsg.DescribeConfigsResponse)
	for _, rr := range req.Resources {
		r := kmsg.NewDescribeConfigsResponseResource()
		r.ResourceType, r.ResourceName = rr.ResourceType, rr.ResourceName
		var entries []configEntry
		var err error
		switch rr.ResourceType {
		case kmsg.ConfigResourceTypeTopic:
			var info broker.TopicInfo
			if err = broker.ValidateTopicName(rr.ResourceName); err != nil {
				break
			}
			if info, err = s.b.Topic(rr.ResourceName); err == nil {
				entries = s.topicConfigEntries(info.Config, info.Overrides)
			}
		case kmsg.ConfigResourceTypeBroker:
			entries, err = s.brokerConfigEntries(rr.ResourceName)
		default:
			err = errInvalidRequest(fmt.Sprintf("config resource type %s is not supported; tierlog describes TOPIC and BROKER resources", rr.ResourceType))
		}
		if err != nil {
			r.ErrorCode, r.ErrorMessage = adminErrorCode(err), errorMessage(err)
			resp.Resources = append(resp.Resources, r)
			continue
		}
		for _, e := range entries {
			if rr.ConfigNames != nil && !slices.Contains(rr.ConfigNames, e.name) {
				continue
			}
			c := kmsg.NewDescribeConfigsResponseResourceConfig()
			c.Name = e.name
			c.Value = &e.value
			c.Source = e.source
			c.IsDefault = e.source == kmsg.ConfigSourceDefaultConfig || e.source == kmsg.ConfigSourceStaticBrokerConfig
			c.ReadOnly = rr.ResourceType == kmsg.ConfigResourceTypeBroker
			c.ConfigType = kmsg.ConfigTypeString
			if t, ok := configTypes[e.name]; ok {
				c.ConfigType = t
			}
			if req.IncludeSynonyms {
				c.ConfigSynonyms = e.synonyms
			}
			if req.IncludeDocumentation {
				if doc := broker.ConfigKeyDoc(e.name); doc != "" {
					doc = "tierlog takes " + doc
					c.Documentation = &doc
				}
			}
			r.Configs = append(r.Configs, c)
		}
		resp.Resources = append(resp.Resources, r)
	}
	return reply{resp: resp}
}

// brokerConfigEntries are this node's Kafka-facing settings. name is the
// node id; "" is the cluster-wide default resource, where tierlog has no
// dynamic settings.
func (s *Server) brokerConfigEntries(name string) ([]configEntry, error) {
	if name == "" {
		return nil, nil
	}
	if name != strconv.Itoa(int(s.opts.NodeID)) {
		return nil, errInvalidRequest(fmt.Sprintf("broker %q: this node is %d", name, s.opts.NodeID))
	}
	static := func(k, v string) configEntry {
		return configEntry{name: k, value: v, source: kmsg.ConfigSourceStaticBrokerConfig}
	}
	return []configEntry{
		static("auto.create.topics.enable", strconv.FormatBool(s.opts.AutoCreateTopics)),
		static("broker.id", strconv.Itoa(int(s.opts.NodeID))),
		static("connections.max.idle.ms", strconv.FormatInt(s.opts.IdleTimeout.Milliseconds(), 10)),
		static("default.replication.factor", strconv.Itoa(s.b.DefaultReplicationFactor())),
		static("num.partitions", strconv.Itoa(int(s.opts.NumPartitions))),
		static("socket.request.max.bytes", strconv.Itoa(int(s.opts.MaxRequestBytes))),
	}, nil
}

// incrementalAlterConfigs applies SET and DELETE to topic keys. APPEND and
// SUBTRACT are for list-valued keys, which tierlog's topics have none of.
func (s *Server) incrementalAlterConfigs(_ *clientConn, req *kmsg.IncrementalAlterConfigsRequest) reply {
	resp := req.ResponseKind().(*kmsg.IncrementalAlterConfigsResponse)
	dup := duplicates(req.Resources, func(r kmsg.IncrementalAlterConfigsRequestResource) configResource {
		return configResource{r.ResourceType, r.ResourceName}
	})
	for _, rr := range req.Resources {
		err := func() error {
			if dup[configResource{rr.ResourceType, rr.ResourceName}] {
				return errInvalidRequest("the resource is named more than once in the request")
			}
			if err := checkTopicResource(rr.ResourceType); err != nil {
				return err
			}
			set, del := map[string]string{}, []string{}
			seen := map[string]bool{}
			for _, c := range rr.Configs {
				if seen[c.Name] {
					return errInvalidRequest(fmt.Sprintf("config key %q is named more than once", c.Name))
				}
				seen[c.Name] = true
				switch c.Op {
				case kmsg.IncrementalAlterConfigOpSet:
					if c.Value == nil {
						return errInvalidRequest(fmt.Sprintf("SET of %q without a value", c.Name))
					}
					set[c.Name] = *c.Value
				case kmsg.IncrementalAlterConfigOpDelete:
					del = append(del, c.Name)
				default:
					return errInvalidRequest(fmt.Sprintf("%s of %q: tierlog's topic keys take single values; use SET or DELETE", c.Op, c.Name))
				}
			}
			return s.alterTopicConfig(rr.ResourceName, set, del, req.ValidateOnly)
		}()
		r := kmsg.NewIncrementalAlterConfigsResponseResource()
		r.ResourceType, r.ResourceName = rr.ResourceType, rr.ResourceName
		r.ErrorCode, r.ErrorMessage = adminErrorCode(err), errorMessage(err)
		resp.Resources = append(resp.Resources, r)
	}
	return reply{resp: resp}
}

// alterConfigs is the legacy AlterConfigs (kafka-python's alter_configs):
// the resource's settings become exactly those given; keys not given
// return to the server defaults.
func (s *Server) alterConfigs(_ *clientConn, req *kmsg.AlterConfigsRequest) reply {
	resp := req.ResponseKind().(*kmsg.AlterConfigsResponse)
	dup := duplicates(req.Resources, func(r kmsg.AlterConfigsRequestResource) configResource {
		return configResource{r.ResourceType, r.ResourceName}
	})
	for _, rr := range req.Resources {
		err := func() error {
			if dup[configResource{rr.ResourceType, rr.ResourceName}] {
				return errInvalidRequest("the resource is named more than once in the request")
			}
			if err := checkTopicResource(rr.ResourceType); err != nil {
				return err
			}
			set := map[string]string{}
			for _, c := range rr.Configs {
				if _, ok := set[c.Name]; ok {
					return errInvalidRequest(fmt.Sprintf("config key %q is named more than once", c.Name))
				}
				if c.Value == nil {
					return errInvalidRequest(fmt.Sprintf("config key %q without a value", c.Name))
				}
				set[c.Name] = *c.Value
			}
			info, err := s.b.Topic(rr.ResourceName)
			if err != nil {
				return err
			}
			var del []string
			for k := range info.Overrides {
				if _, ok := set[k]; !ok {
					del = append(del, k)
				}
			}
			return s.alterTopicConfig(rr.ResourceName, set, del, req.ValidateOnly)
		}()
		r := kmsg.NewAlterConfigsResponseResource()
		r.ResourceType, r.ResourceName = rr.ResourceType, rr.ResourceName
		r.ErrorCode, r.ErrorMessage = adminErrorCode(err), errorMessage(err)
		resp.Resources = append(resp.Resources, r)
	}
	return reply{resp: resp}
}

func (s *Server) alterTopicConfig(name string, set map[string]string, del []string, validateOnly bool) error {
	if err := broker.ValidateTopicName(name); err != nil {
		return err
	}
	if validateOnly {
		return s.b.CheckAlterTopicConfig(name, set, del)
	}
	_, err := s.b.AlterTopicConfig(name, set, del)
	return err
}

// checkTopicResource refuses alters of anything but a topic: the broker's
// settings are static (the server's config file and flags).
func checkTopicResource(t kmsg.ConfigResourceType) error {
	switch t {
	case kmsg.ConfigResourceTypeTopic:
		return nil
	case kmsg.ConfigResourceTypeBroker:
		return errInvalidRequest("tierlog has no dynamic broker configs; set them in the server's config file or flags")
	}
	return errInvalidRequest(fmt.Sprintf("config resource type %s is not supported; tierlog alters TOPIC resources", t))
}

type configResource struct {
	typ  kmsg.ConfigResourceType
	name string
}

func errInvalidRequest(msg string) error { return &codedError{kerr.InvalidRequest, msg} }

// adminErrorCode is errorCode for admin requests, which answer a bad
// partition count INVALID_PARTITIONS.
func adminErrorCode(err error) int16 {
	if errors.Is(err, broker.ErrInvalidPartition) {
		return kerr.InvalidPartitions.Code
	}
	return errorCode(err)
}
