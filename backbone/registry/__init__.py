"""backbone's schema registry: the Confluent Schema Registry REST protocol over a compacted Kafka topic.

`compatibility` holds the pure Avro resolution rules, `validation` the specification's rules every new
schema must meet, `store` the state and its Kafka log, `app` the HTTP API, and `service.run(settings)`
wires them into the process `python -m backbone.registry` starts.
"""
