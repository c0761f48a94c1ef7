package kafka

import (
	"github.com/twmb/franz-go/pkg/kmsg"
)

// api is one request kind the server answers: the versions it implements
// (and advertises in ApiVersions) and its handler.
type api struct {
	min, max int16
	handle   func(s *Server, c *clientConn, req kmsg.Request) reply
	// hidden answers the kind (with the Kafka error for a feature tierlog
	// lacks, such as transactions or SASL) without advertising it, so
	// clients do not choose it but get a clear error, not a closed
	// connection, if they send it anyway.
	hidden bool
}

// typed adapts a handler of one request type to the table.
func typed[R kmsg.Request](f func(*Server, *clientConn, R) reply) func(*Server, *clientConn, kmsg.Request) reply {
	return func(s *Server, c *clientConn, req kmsg.Request) reply { return f(s, c, req.(R)) }
}

// apis is every request kind the server answers, by key. A key not here
// closes the connection, as Kafka does for an API it does not know.
var apis map[int16]api

func init() {
	apis = map[int16]api{
		kmsg.ApiVersions.Int16(): {min: 0, max: 3, handle: typed((*Server).apiVersions)},
		kmsg.Metadata.Int16():    {min: 0, max: 12, handle: typed((*Server).metadata)},

		// Admin (topics.go, configs.go, cluster.go): every version kmsg
		// has, which covers kadm's, kafka-python 2.0.2's (CreateTopics
		// v3, DeleteTopics v3, CreatePartitions v1, DescribeConfigs v2,
		// AlterConfigs v1) and the kafka CLI's.
		kmsg.CreateTopics.Int16():            {min: 0, max: 7, handle: typed((*Server).createTopics)},
		kmsg.DeleteTopics.Int16():            {min: 0, max: 6, handle: typed((*Server).deleteTopics)},
		kmsg.CreatePartitions.Int16():        {min: 0, max: 3, handle: typed((*Server).createPartitions)},
		kmsg.DescribeConfigs.Int16():         {min: 0, max: 4, handle: typed((*Server).describeConfigs)},
		kmsg.AlterConfigs.Int16():            {min: 0, max: 2, handle: typed((*Server).alterConfigs)},
		kmsg.IncrementalAlterConfigs.Int16(): {min: 0, max: 1, handle: typed((*Server).incrementalAlterConfigs)},
		kmsg.DescribeCluster.Int16():         {min: 0, max: 2, handle: typed((*Server).describeCluster)},

		// Features tierlog lacks (unsupported.go says why each is or is
		// not advertised).
		kmsg.DescribeTransactions.Int16(): {min: 0, max: 0, handle: typed((*Server).describeTransactions)},
		kmsg.ListTransactions.Int16():     {min: 0, max: 2, handle: typed((*Server).listTransactions)},
		kmsg.DescribeACLs.Int16():         {min: 0, max: 1, handle: typed((*Server).describeACLs)},
		kmsg.CreateACLs.Int16():           {min: 0, max: 1, handle: typed((*Server).createACLs)},
		kmsg.DeleteACLs.Int16():           {min: 0, max: 1, handle: typed((*Server).deleteACLs)},
		kmsg.SASLHandshake.Int16():        {min: 0, max: 1, handle: typed((*Server).saslHandshake)},
		kmsg.AddPartitionsToTxn.Int16():   hiddenAPI(kmsg.AddPartitionsToTxn, typed((*Server).addPartitionsToTxn)),
		kmsg.AddOffsetsToTxn.Int16():      hiddenAPI(kmsg.AddOffsetsToTxn, typed((*Server).addOffsetsToTxn)),
		kmsg.EndTxn.Int16():               hiddenAPI(kmsg.EndTxn, typed((*Server).endTxn)),
		kmsg.TxnOffsetCommit.Int16():      hiddenAPI(kmsg.TxnOffsetCommit, typed((*Server).txnOffsetCommit)),
		kmsg.SASLAuthenticate.Int16():     hiddenAPI(kmsg.SASLAuthenticate, typed((*Server).saslAuthenticate)),

		kmsg.Fetch.Int16():       {min: fetchMinVersion, max: fetchMaxVersion, handle: typed((*Server).fetch)},
		kmsg.ListOffsets.Int16(): {min: listOffsetsMinVersion, max: listOffsetsMaxVersion, handle: typed((*Server).listOffsets)},
		kmsg.OffsetForLeaderEpoch.Int16(): {min: offsetForLeaderEpochMinVersion, max: offsetForLeaderEpochMaxVersion,
			handle: typed((*Server).offsetForLeaderEpoch)},

		// Consumer groups (classic protocol): groups.go, offsets.go,
		// groupadmin.go, findcoordinator.go.
		kmsg.FindCoordinator.Int16(): {min: 0, max: 4, handle: typed((*Server).findCoordinator)},
		kmsg.JoinGroup.Int16():       {min: 0, max: 9, handle: typed((*Server).joinGroup)},
		kmsg.SyncGroup.Int16():       {min: 0, max: 5, handle: typed((*Server).syncGroup)},
		kmsg.Heartbeat.Int16():       {min: 0, max: 4, handle: typed((*Server).heartbeat)},
		kmsg.LeaveGroup.Int16():      {min: 0, max: 5, handle: typed((*Server).leaveGroup)},
		kmsg.OffsetCommit.Int16():    {min: 0, max: 8, handle: typed((*Server).offsetCommit)},
		kmsg.OffsetFetch.Int16():     {min: 0, max: 8, handle: typed((*Server).offsetFetch)},
		kmsg.OffsetDelete.Int16():    {min: 0, max: 0, handle: typed((*Server).offsetDelete)},
		kmsg.ListGroups.Int16():      {min: 0, max: 5, handle: typed((*Server).listGroups)},
		kmsg.DescribeGroups.Int16():  {min: 0, max: 5, handle: typed((*Server).describeGroups)},
		kmsg.DeleteGroups.Int16():    {min: 0, max: 2, handle: typed((*Server).deleteGroups)},

		// Produce to v9: v10+ add leader hints on NOT_LEADER_OR_FOLLOWER
		// and transaction semantics (KIP-890) a single node without
		// transactions has no use for. Advertised from v0 although only
		// RecordBatch v2 (magic 2, the only format tierlog stores) is
		// accepted at any version (older message sets get INVALID_RECORD):
		// librdkafka before 2.11.1 (Debian's kcat) compresses with gzip,
		// snappy or lz4 only if the broker's Produce range includes v0,
		// and otherwise sends every batch uncompressed. Clients choose
		// the newest version both sides have, v3 or later for any client
		// that writes RecordBatch v2.
		kmsg.Produce.Int16():        {min: 0, max: 9, handle: typed((*Server).produce)},
		kmsg.InitProducerID.Int16(): {min: 0, max: 4, handle: typed((*Server).initProducerID)},
	}
}

// hiddenAPI answers every version kmsg can decode of a kind that is not
// advertised.
func hiddenAPI(k kmsg.Key, handle func(*Server, *clientConn, kmsg.Request) reply) api {
	return api{min: 0, max: kmsg.RequestForKey(k.Int16()).MaxVersion(), handle: handle, hidden: true}
}

// apiVersionKeys lists the table for an ApiVersions response, by key.
func apiVersionKeys() []kmsg.ApiVersionsResponseApiKey {
	keys := make([]kmsg.ApiVersionsResponseApiKey, 0, len(apis))
	for k := range int16(100) {
		a, ok := apis[k]
		if !ok || a.hidden {
			continue
		}
		keys = append(keys, kmsg.ApiVersionsResponseApiKey{ApiKey: k, MinVersion: a.min, MaxVersion: a.max})
	}
	return keys
}
