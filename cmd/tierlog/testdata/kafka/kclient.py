#!/usr/bin/python3
"""kafka-python clients for tierlog's interop tests (kafka_interop_test.go).

Run with Debian's /usr/bin/python3 (python3-kafka, kafka-python 2.0.2). The
clients are built as a new user builds them: the plain KafkaProducer and
KafkaConsumer constructors, with an option only where the test names it.

  produce: reads records as JSON lines on stdin ({"key", "value": hex or
           null, "headers": [[name, hex]], "timestamp": ms or null,
           "partition": n or null}), sends them all, waits for every
           acknowledgement and prints one {"event": "sent", ...} line each,
           in input order.
  consume: prints {"event": "started"} once the consumer exists, then
           {"event": "ready", "positions": {...}} once it has partitions
           assigned and knows where it reads from (a record produced after
           that line is one it must get, even with auto_offset_reset
           latest), then one {"event": "record", ...} line per record until
           --count records have arrived. --commit commits synchronously
           before closing.

Every line is JSON on stdout; bytes are hex so any byte survives. Nothing
waits forever: --timeout bounds the work and an alarm kills the process
10 s after it, whatever a client call is blocked in.
"""

import argparse
import json
import signal
import sys
import time

from kafka import KafkaConsumer, KafkaProducer


def emit(obj):
    print(json.dumps(obj), flush=True)


def unhex(s):
    return None if s is None else bytes.fromhex(s)


def hexed(b):
    return None if b is None else b.hex()


def produce(a):
    kwargs = {}
    if a.compression:
        kwargs["compression_type"] = a.compression
    producer = KafkaProducer(bootstrap_servers=a.bootstrap, **kwargs)
    futures = []
    for line in sys.stdin:
        if not line.strip():
            continue
        r = json.loads(line)
        headers = [(k, unhex(v)) for k, v in r.get("headers") or []]
        futures.append(producer.send(a.topic, key=unhex(r.get("key")), value=unhex(r.get("value")),
                                     headers=headers or None, timestamp_ms=r.get("timestamp"),
                                     partition=r.get("partition")))
    producer.flush(timeout=a.timeout)
    for f in futures:
        md = f.get(timeout=a.timeout)
        emit({"event": "sent", "partition": md.partition, "offset": md.offset, "timestamp": md.timestamp})
    producer.close(timeout=a.timeout)


def consume(a, deadline):
    kwargs = {}
    if a.group:
        kwargs["group_id"] = a.group
    if a.offset_reset:
        kwargs["auto_offset_reset"] = a.offset_reset
    if a.commit:
        kwargs["enable_auto_commit"] = False
    consumer = KafkaConsumer(a.topic, bootstrap_servers=[a.bootstrap], **kwargs)
    emit({"event": "started"})
    ready = False
    got = 0
    while got < a.count:
        if time.monotonic() > deadline:
            sys.exit("timed out after %ss: %d of %d records (ready: %s)" % (a.timeout, got, a.count, ready))
        # One record per poll: the consumer's position is then exactly
        # past the records printed, which is what a commit stores.
        polled = consumer.poll(timeout_ms=100, max_records=1)
        if not ready and consumer.assignment():
            # Where each partition was read from: this poll may already
            # have returned (and moved past) its first records.
            positions = {str(tp.partition): polled[tp][0].offset if polled.get(tp) else consumer.position(tp)
                         for tp in consumer.assignment()}
            emit({"event": "ready", "positions": positions})
            ready = True
        for tp, records in polled.items():
            for r in records:
                emit({"event": "record", "topic": r.topic, "partition": r.partition, "offset": r.offset,
                      "timestamp": r.timestamp, "timestamp_type": r.timestamp_type,
                      "key": hexed(r.key), "value": hexed(r.value),
                      "headers": [[k, hexed(v)] for k, v in r.headers]})
                got += 1
    if a.commit:
        consumer.commit()
        emit({"event": "committed"})
    consumer.close(autocommit=False)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["produce", "consume"])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--timeout", type=float, default=60)
    p.add_argument("--compression")
    p.add_argument("--count", type=int, default=0)
    p.add_argument("--group")
    p.add_argument("--offset-reset", choices=["earliest", "latest"])
    p.add_argument("--commit", action="store_true")
    a = p.parse_args()
    signal.alarm(int(a.timeout) + 10)  # SIGALRM's default action ends the process
    deadline = time.monotonic() + a.timeout
    if a.mode == "produce":
        produce(a)
    else:
        consume(a, deadline)


if __name__ == "__main__":
    main()
