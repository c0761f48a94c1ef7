package kafka

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// kafkaPythonAdmin drives kafka-python 2.0.2's KafkaAdminClient (Debian's
// python3-kafka): it picks its versions from our ApiVersions (CreateTopics
// v3, DeleteTopics v3, DescribeConfigs v2, AlterConfigs v1,
// CreatePartitions v1, DescribeAcls v1) and must get answers it can read.
// Each step prints one line the test checks.
const kafkaPythonAdmin = `
import sys
from kafka.admin import KafkaAdminClient, NewTopic, NewPartitions, ConfigResource, ConfigResourceType, ACLFilter, ResourcePatternFilter, ResourceType, ACLOperation, ACLPermissionType, ACLResourcePatternType
from kafka.errors import SecurityDisabledError

a = KafkaAdminClient(bootstrap_servers=sys.argv[1], request_timeout_ms=10000)
r = a.create_topics([NewTopic('py', 2, 1, topic_configs={'retention.ms': '60000'})], validate_only=True)
print('validate', r.topic_errors[0][1])
r = a.create_topics([NewTopic('py', 2, 1, topic_configs={'retention.ms': '60000'})])
print('create', r.topic_errors[0][1])
try:
    a.create_topics([NewTopic('py3', 1, 3)])
    print('create-rf3 no error')
except Exception as e:
    print('create-rf3', type(e).__name__)
print('list', sorted(a.list_topics()))
r = a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, 'py')])[0]
res = r.resources[0]
print('describe', res[0], dict((c[0], c[1]) for c in res[4])['retention.ms'])
r = a.alter_configs([ConfigResource(ConfigResourceType.TOPIC, 'py', configs={'retention.ms': '120000'})])
print('alter', r.resources[0][0])
r = a.create_partitions({'py': NewPartitions(4)})
print('partitions', r.topic_errors[0][1])
try:
    a.create_partitions({'py': NewPartitions(3)})
    print('shrink no error')
except Exception as e:
    print('shrink', type(e).__name__)
try:
    a.describe_acls(ACLFilter(principal=None, host='*', operation=ACLOperation.ANY, permission_type=ACLPermissionType.ANY,
        resource_pattern=ResourcePatternFilter(ResourceType.TOPIC, None, ACLResourcePatternType.ANY)))
    print('acls no error')
except SecurityDisabledError:
    print('acls SecurityDisabledError')
r = a.delete_topics(['py'])
print('delete', r.topic_error_codes[0][1])
a.close()
`

// kafka-python's KafkaAdminClient works against the server at the versions
// it chooses, and gets Kafka's error codes (INVALID_REPLICATION_FACTOR,
// INVALID_PARTITIONS, SECURITY_DISABLED) where it should.
func TestKafkaPythonAdmin(t *testing.T) {
	n := startNode(t, "", Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "/usr/bin/python3", "-c", kafkaPythonAdmin, n.addr).CombinedOutput()
	if err != nil {
		t.Fatalf("kafka-python admin script (needs Debian's python3-kafka; the test command installs it): %v\n%s", err, out)
	}
	want := []string{
		"validate 0",
		"create 0",
		"create-rf3 InvalidReplicationFactorError",
		"list ['py']",
		"describe 0 60000",
		"alter 0",
		"partitions 0",
		"shrink InvalidPartitionsError",
		"acls SecurityDisabledError",
		"delete 0",
	}
	got := strings.Split(strings.TrimSpace(string(out)), "\n")
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("kafka-python admin:\n%s\nwant:\n%s", out, strings.Join(want, "\n"))
	}
	if ti, err := n.b.Topic("py"); err == nil {
		t.Fatalf("topic py still there after kafka-python deleted it: %+v", ti)
	}
}
