package kafka

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Requests for features tierlog lacks get Kafka's error for them at every
// version kmsg has, on a connection that stays open; the hidden ones are
// not advertised and the others are.
func TestUnsupportedFeaturesAnswerWithErrors(t *testing.T) {
	n := startNode(t, "", Options{})
	r := dialRaw(t, n.addr)
	av := kmsg.NewPtrApiVersionsRequest()
	av.SetVersion(3)
	advertised := map[int16]bool{}
	for _, k := range r.roundTrip(av).(*kmsg.ApiVersionsResponse).ApiKeys {
		advertised[k.ApiKey] = true
	}

	type check struct {
		req     func() kmsg.Request
		codes   func(kmsg.Response) []int16
		want    *kerr.Error
		visible bool
	}
	checks := []check{
		{func() kmsg.Request {
			req := kmsg.NewPtrAddPartitionsToTxnRequest()
			req.TransactionalID, req.ProducerID = "tx", 1
			rt := kmsg.NewAddPartitionsToTxnRequestTopic()
			rt.Topic, rt.Partitions = "t", []int32{0, 1}
			req.Topics = append(req.Topics, rt)
			x := kmsg.NewAddPartitionsToTxnRequestTransaction()
			x.TransactionalID = "tx"
			xt := kmsg.NewAddPartitionsToTxnRequestTransactionTopic()
			xt.Topic, xt.Partitions = "t", []int32{0}
			x.Topics = append(x.Topics, xt)
			req.Transactions = append(req.Transactions, x)
			return req
		}, func(r kmsg.Response) []int16 {
			resp := r.(*kmsg.AddPartitionsToTxnResponse)
			var out []int16
			if resp.Version >= 4 {
				out = append(out, resp.ErrorCode)
				for _, x := range resp.Transactions {
					for _, t := range x.Topics {
						for _, p := range t.Partitions {
							out = append(out, p.ErrorCode)
						}
					}
				}
			}
			for _, t := range resp.Topics {
				for _, p := range t.Partitions {
					out = append(out, p.ErrorCode)
				}
			}
			return out
		}, kerr.InvalidProducerIDMapping, false},
		{func() kmsg.Request { return kmsg.NewPtrAddOffsetsToTxnRequest() },
			func(r kmsg.Response) []int16 { return []int16{r.(*kmsg.AddOffsetsToTxnResponse).ErrorCode} },
			kerr.InvalidProducerIDMapping, false},
		{func() kmsg.Request { return kmsg.NewPtrEndTxnRequest() },
			func(r kmsg.Response) []int16 { return []int16{r.(*kmsg.EndTxnResponse).ErrorCode} },
			kerr.InvalidProducerIDMapping, false},
		{func() kmsg.Request {
			req := kmsg.NewPtrTxnOffsetCommitRequest()
			rt := kmsg.NewTxnOffsetCommitRequestTopic()
			rt.Topic = "t"
			rt.Partitions = []kmsg.TxnOffsetCommitRequestTopicPartition{kmsg.NewTxnOffsetCommitRequestTopicPartition()}
			req.Topics = append(req.Topics, rt)
			return req
		}, func(r kmsg.Response) []int16 {
			return []int16{r.(*kmsg.TxnOffsetCommitResponse).Topics[0].Partitions[0].ErrorCode}
		}, kerr.InvalidProducerIDMapping, false},
		{func() kmsg.Request {
			req := kmsg.NewPtrDescribeTransactionsRequest()
			req.TransactionalIDs = []string{"a", "b"}
			return req
		}, func(r kmsg.Response) []int16 {
			var out []int16
			for _, s := range r.(*kmsg.DescribeTransactionsResponse).TransactionStates {
				out = append(out, s.ErrorCode)
			}
			return out
		}, kerr.TransactionalIDNotFound, true},
		{func() kmsg.Request { return kmsg.NewPtrDescribeACLsRequest() },
			func(r kmsg.Response) []int16 { return []int16{r.(*kmsg.DescribeACLsResponse).ErrorCode} },
			kerr.SecurityDisabled, true},
		{func() kmsg.Request {
			req := kmsg.NewPtrCreateACLsRequest()
			req.Creations = make([]kmsg.CreateACLsRequestCreation, 2)
			return req
		}, func(r kmsg.Response) []int16 {
			var out []int16
			for _, x := range r.(*kmsg.CreateACLsResponse).Results {
				out = append(out, x.ErrorCode)
			}
			return out
		}, kerr.SecurityDisabled, true},
		{func() kmsg.Request {
			req := kmsg.NewPtrDeleteACLsRequest()
			req.Filters = make([]kmsg.DeleteACLsRequestFilter, 1)
			return req
		}, func(r kmsg.Response) []int16 { return []int16{r.(*kmsg.DeleteACLsResponse).Results[0].ErrorCode} },
			kerr.SecurityDisabled, true},
		{func() kmsg.Request {
			req := kmsg.NewPtrSASLHandshakeRequest()
			req.Mechanism = "PLAIN"
			return req
		}, func(r kmsg.Response) []int16 {
			resp := r.(*kmsg.SASLHandshakeResponse)
			if len(resp.SupportedMechanisms) != 0 {
				t.Errorf("SaslHandshake lists mechanisms %v", resp.SupportedMechanisms)
			}
			return []int16{resp.ErrorCode}
		}, kerr.UnsupportedSaslMechanism, true},
		{func() kmsg.Request { return kmsg.NewPtrSASLAuthenticateRequest() },
			func(r kmsg.Response) []int16 { return []int16{r.(*kmsg.SASLAuthenticateResponse).ErrorCode} },
			kerr.IllegalSaslState, false},
	}
	for _, c := range checks {
		key := c.req().Key()
		name := kmsg.NameForKey(key)
		if advertised[key] != c.visible {
			t.Errorf("%s advertised %v, want %v", name, advertised[key], c.visible)
		}
		a := apis[key]
		for v := a.min; v <= a.max; v++ {
			req := c.req()
			req.SetVersion(v)
			codes := c.codes(r.roundTrip(req))
			if len(codes) == 0 {
				t.Errorf("%s v%d: no error codes in the response", name, v)
			}
			for _, code := range codes {
				if code != c.want.Code {
					t.Errorf("%s v%d: error %v, want %s", name, v, kerr.ErrorForCode(code), c.want.Message)
				}
			}
		}
	}

	// ListTransactions: there are none; unknown state filters come back.
	lt := kmsg.NewPtrListTransactionsRequest()
	lt.StateFilters = []string{"Ongoing", "Sideways"}
	resp := r.roundTrip(lt).(*kmsg.ListTransactionsResponse)
	if resp.ErrorCode != 0 || len(resp.TransactionStates) != 0 || len(resp.UnknownStateFilters) != 1 || resp.UnknownStateFilters[0] != "Sideways" {
		t.Errorf("ListTransactions: %+v", resp)
	}
	r.checkAlive()
}

// kcat (librdkafka) configured for SASL reports that the broker has no
// SASL mechanisms - a clear error, not a dropped connection or a hang -
// and the server keeps serving.
func TestKcatSASLGetsClearError(t *testing.T) {
	n := startNode(t, "", Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "kcat", "-L", "-b", n.addr, "-m", "2",
		"-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanisms=PLAIN",
		"-X", "sasl.username=u", "-X", "sasl.password=p").CombinedOutput()
	if err == nil {
		t.Fatalf("kcat with SASL succeeded against a broker without SASL:\n%s", out)
	}
	if !strings.Contains(string(out), "Unsupported SASL mechanism") {
		t.Fatalf("kcat with SASL (needs Debian's kcat; the test command installs it): %v\n%s", err, out)
	}
	dialRaw(t, n.addr).checkAlive()
}
