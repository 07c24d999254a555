"""Kafka plumbing every backbone process shares: the topic catalog, applying it, and the Avro seam.

`topics` declares each topic once (name, event, key, partitions, policy, DLQ); `admin` creates what is
missing and reports drift; `wire` turns canonical models into Avro records and back (the one seam);
`serde` frames them in the Confluent wire format through the schema registry.
"""
