package kafka

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tierlog/tierlog/broker"
)

func adminClient(t *testing.T, addr string) (*kadm.Client, *kgo.Client) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.RetryTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl), cl
}

func ptr(s string) *string { return &s }

// kadm's admin calls against a real server: create (and validate-only),
// list, describe configs, alter configs (incremental and legacy), create
// partitions, delete, describe cluster - each checked against the
// broker's own state, and against a restart where it must persist.
func TestAdminCalls(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	n := startNode(t, dir, Options{NumPartitions: 3})
	adm, cl := adminClient(t, n.addr)

	// Validate-only creates nothing.
	vr, err := adm.ValidateCreateTopics(ctx, 2, 1, nil, "dry")
	if err != nil || vr["dry"].Err != nil {
		t.Fatalf("validate-only create: %v %v", err, vr["dry"].Err)
	}
	if _, err := n.b.Topic("dry"); !errors.Is(err, broker.ErrUnknownTopic) {
		t.Fatalf("validate-only create made the topic (%v)", err)
	}
	// A create: -1 partitions is the server's num_partitions, -1
	// replication the only one there is.
	cr, err := adm.CreateTopics(ctx, -1, -1, map[string]*string{"retention.ms": ptr("3600000")}, "events")
	if err != nil || cr["events"].Err != nil {
		t.Fatalf("create: %v %v", err, cr["events"].Err)
	}
	if got := cr["events"]; got.NumPartitions != 3 || got.ReplicationFactor != 1 {
		t.Errorf("create answered %d partitions and replication %d, want 3 and 1", got.NumPartitions, got.ReplicationFactor)
	}
	if ti, err := n.b.Topic("events"); err != nil || len(ti.Partitions) != 3 || ti.Overrides["retention.ms"] != "3600000" {
		t.Fatalf("broker's topic after create: %+v %v", ti, err)
	}
	// Refusals, each with Kafka's code.
	for _, c := range []struct {
		name    string
		parts   int32
		rf      int16
		configs map[string]*string
		want    *kerr.Error
	}{
		{"events", 1, 1, nil, kerr.TopicAlreadyExists},
		{"rf3", 1, 3, nil, kerr.InvalidReplicationFactor},
		{"zero", 0, 1, nil, kerr.InvalidPartitions},
		{"badkey", 1, 1, map[string]*string{"cleanup.policy.typo": ptr("x")}, kerr.InvalidConfig},
		{"badvalue", 1, 1, map[string]*string{"retention.ms": ptr("soon")}, kerr.InvalidConfig},
		{"bad name!", 1, 1, nil, kerr.InvalidTopicException},
	} {
		for _, validate := range []bool{true, false} {
			create := adm.CreateTopics
			if validate {
				create = adm.ValidateCreateTopics
			}
			r, err := create(ctx, c.parts, c.rf, c.configs, c.name)
			if err != nil {
				t.Fatal(err)
			}
			if got := r[c.name].Err; !errors.Is(got, c.want) {
				t.Errorf("create %q (validate-only %v): %v, want %s", c.name, validate, got, c.want.Message)
			}
		}
	}

	// List.
	td, err := adm.ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := td.Names(); len(got) != 1 || got[0] != "events" || len(td["events"].Partitions) != 3 {
		t.Fatalf("ListTopics: %v", td)
	}

	// Describe configs: every key, with where its value comes from.
	rcs, err := adm.DescribeTopicConfigs(ctx, "events", "missing")
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]kadm.ResourceConfig{}
	for _, rc := range rcs {
		byName[rc.Name] = rc
	}
	if !errors.Is(byName["missing"].Err, kerr.UnknownTopicOrPartition) {
		t.Errorf("describe configs of a missing topic: %v", byName["missing"].Err)
	}
	ev := byName["events"]
	if ev.Err != nil || len(ev.Configs) != len(broker.ConfigKeys()) {
		t.Fatalf("describe configs of events: %v, %d keys, want %d", ev.Err, len(ev.Configs), len(broker.ConfigKeys()))
	}
	want := n.b.TopicDefaults().Map()
	want["retention.ms"] = "3600000"
	for _, c := range ev.Configs {
		if c.MaybeValue() != want[c.Key] {
			t.Errorf("%s = %q, want %q", c.Key, c.MaybeValue(), want[c.Key])
		}
		wantSrc := kmsg.ConfigSourceDefaultConfig
		if c.Key == "retention.ms" {
			wantSrc = kmsg.ConfigSourceDynamicTopicConfig
			if len(c.Synonyms) != 2 || c.Synonyms[1].Source != kmsg.ConfigSourceDefaultConfig {
				t.Errorf("retention.ms synonyms %+v, want the topic's and the default", c.Synonyms)
			}
		}
		if c.Source != wantSrc {
			t.Errorf("%s source %s, want %s", c.Key, c.Source, wantSrc)
		}
	}
	brc, err := adm.DescribeBrokerConfigs(ctx, 0)
	if err != nil || len(brc) != 1 || brc[0].Err != nil {
		t.Fatalf("describe broker configs: %v %+v", err, brc)
	}
	if v, _ := brc.On("0", func(rc *kadm.ResourceConfig) error {
		for _, c := range rc.Configs {
			if c.Key == "num.partitions" && c.MaybeValue() != "3" {
				t.Errorf("broker num.partitions %q, want 3", c.MaybeValue())
			}
		}
		return nil
	}); v.Name != "0" {
		t.Errorf("broker configs for %q", v.Name)
	}

	// Incremental alter: SET and DELETE; validate-only changes nothing;
	// APPEND, unknown keys and bad values are refused and change nothing.
	alter := func(f func(context.Context, []kadm.AlterConfig, ...string) (kadm.AlterConfigsResponses, error), acs ...kadm.AlterConfig) error {
		t.Helper()
		r, err := f(ctx, acs, "events")
		if err != nil {
			t.Fatal(err)
		}
		return r[0].Err
	}
	if err := alter(adm.ValidateAlterTopicConfigs, kadm.AlterConfig{Name: "segment.ms", Value: ptr("60000")}); err != nil {
		t.Fatal(err)
	}
	if err := alter(adm.AlterTopicConfigs, kadm.AlterConfig{Name: "segment.ms", Value: ptr("60000")},
		kadm.AlterConfig{Op: kadm.DeleteConfig, Name: "retention.ms"}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		ac   kadm.AlterConfig
		want *kerr.Error
	}{
		{kadm.AlterConfig{Op: kadm.AppendConfig, Name: "segment.ms", Value: ptr("1")}, kerr.InvalidRequest},
		{kadm.AlterConfig{Op: kadm.SubtractConfig, Name: "segment.ms", Value: ptr("1")}, kerr.InvalidRequest},
		{kadm.AlterConfig{Name: "no.such.key", Value: ptr("1")}, kerr.InvalidConfig},
		{kadm.AlterConfig{Name: "segment.ms", Value: ptr("-5")}, kerr.InvalidConfig},
	} {
		if err := alter(adm.AlterTopicConfigs, c.ac); !errors.Is(err, c.want) {
			t.Errorf("alter %+v: %v, want %s", c.ac, err, c.want.Message)
		}
	}
	if ti, _ := n.b.Topic("events"); len(ti.Overrides) != 1 || ti.Overrides["segment.ms"] != "60000" {
		t.Fatalf("overrides after the alters: %v, want only segment.ms=60000", ti.Overrides)
	}
	// Legacy AlterConfigs replaces the whole set.
	if err := alter(adm.AlterTopicConfigsState, kadm.AlterConfig{Name: "flush.policy", Value: ptr("interval")}); err != nil {
		t.Fatal(err)
	}
	if ti, _ := n.b.Topic("events"); len(ti.Overrides) != 1 || ti.Overrides["flush.policy"] != "interval" {
		t.Fatalf("overrides after AlterConfigs: %v, want only flush.policy=interval", ti.Overrides)
	}

	// Create partitions: validate-only, grow, and a shrink refused.
	pr, err := adm.ValidateUpdatePartitions(ctx, 5, "events")
	if err != nil || pr["events"].Err != nil {
		t.Fatalf("validate-only create partitions: %v %v", err, pr["events"].Err)
	}
	if ti, _ := n.b.Topic("events"); len(ti.Partitions) != 3 {
		t.Fatalf("validate-only create partitions made %d", len(ti.Partitions))
	}
	if pr, err = adm.CreatePartitions(ctx, 2, "events"); err != nil || pr["events"].Err != nil {
		t.Fatalf("create partitions: %v %v", err, pr["events"].Err)
	}
	for _, set := range []int{2, 5} {
		if pr, err = adm.UpdatePartitions(ctx, set, "events"); err != nil || !errors.Is(pr["events"].Err, kerr.InvalidPartitions) {
			t.Errorf("set partitions to %d of 5: %v %v, want INVALID_PARTITIONS", set, err, pr["events"].Err)
		}
	}
	if pr, err = adm.UpdatePartitions(ctx, 4, "missing"); err != nil || !errors.Is(pr["missing"].Err, kerr.UnknownTopicOrPartition) {
		t.Errorf("create partitions of a missing topic: %v %v", err, pr["missing"].Err)
	}
	if td, err = adm.ListTopics(ctx, "events"); err != nil || len(td["events"].Partitions) != 5 {
		t.Fatalf("after create partitions, metadata has %d partitions (%v)", len(td["events"].Partitions), err)
	}

	// Describe cluster: this node, the data directory's cluster id.
	dc := kmsg.NewPtrDescribeClusterRequest()
	dc.EndpointType = 1
	dr, err := dc.RequestWith(ctx, cl)
	if err != nil || dr.ErrorCode != 0 {
		t.Fatalf("describe cluster: %v %v", err, dr)
	}
	if dr.ClusterID != n.b.ClusterID() || dr.ControllerID != 0 || len(dr.Brokers) != 1 || dr.Brokers[0].Port != n.s.opts.AdvertisedPort {
		t.Errorf("describe cluster: %+v, want cluster %s and this node", dr, n.b.ClusterID())
	}
	dc.EndpointType = 2
	if dr, err = dc.RequestWith(ctx, cl); err != nil || dr.ErrorCode != kerr.MismatchedEndpointType.Code {
		t.Errorf("describe cluster of controllers: %v %v", err, dr.ErrorCode)
	}

	// Delete: by name; by topic id there are none; a missing one is
	// unknown. The node restarted keeps the deletion.
	dt, err := adm.DeleteTopics(ctx, "events", "missing")
	if err != nil {
		t.Fatal(err)
	}
	if dt["events"].Err != nil || !errors.Is(dt["missing"].Err, kerr.UnknownTopicOrPartition) {
		t.Fatalf("delete: events %v, missing %v", dt["events"].Err, dt["missing"].Err)
	}
	byID := kmsg.NewPtrDeleteTopicsRequest()
	byID.Topics = []kmsg.DeleteTopicsRequestTopic{{TopicID: [16]byte{1, 2, 3}}}
	if r, err := byID.RequestWith(ctx, cl); err != nil || r.Topics[0].ErrorCode != kerr.UnknownTopicID.Code {
		t.Errorf("delete by topic id: %v %+v", err, r)
	}
	if ts := n.b.Topics(); len(ts) != 0 {
		t.Fatalf("topics after delete: %+v", ts)
	}
}

// What an admin call changes is durable: a restarted node has the created
// topic with its added partitions and altered config.
func TestAdminChangesSurviveRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	func() {
		n := startNode(t, dir, Options{})
		adm, _ := adminClient(t, n.addr)
		if r, err := adm.CreateTopics(ctx, 2, 1, nil, "kept"); err != nil || r["kept"].Err != nil {
			t.Fatalf("create: %v %v", err, r["kept"].Err)
		}
		if r, err := adm.UpdatePartitions(ctx, 4, "kept"); err != nil || r["kept"].Err != nil {
			t.Fatalf("create partitions: %v %v", err, r["kept"].Err)
		}
		if r, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Name: "retention.bytes", Value: ptr("1048576")}}, "kept"); err != nil || r[0].Err != nil {
			t.Fatalf("alter: %v %v", err, r[0].Err)
		}
		n.s.Close()
		n.b.Close()
	}()
	n := startNode(t, dir, Options{})
	adm, _ := adminClient(t, n.addr)
	td, err := adm.ListTopics(ctx, "kept")
	if err != nil || len(td["kept"].Partitions) != 4 {
		t.Fatalf("after a restart: %v partitions (%v), want 4", len(td["kept"].Partitions), err)
	}
	rcs, err := adm.DescribeTopicConfigs(ctx, "kept")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range rcs[0].Configs {
		if c.Key == "retention.bytes" && (c.MaybeValue() != "1048576" || c.Source != kmsg.ConfigSourceDynamicTopicConfig) {
			t.Errorf("after a restart retention.bytes = %q from %s", c.MaybeValue(), c.Source)
		}
	}
}
