"""backbone's processor runtime: a transactional consume-transform-produce loop over confluent-kafka.

`loop.StreamWorker` runs `Stage`s (a handler, its co-partitioned input topics and its state stores);
`state` keeps stores in memory and logs them to compacted changelogs; `broadcast` follows topics every
worker must read whole (master data); `clients` is the one librdkafka configuration factory. The
billing topology runs on it, and so will the delivery connectors and the PostgreSQL sink.
"""
