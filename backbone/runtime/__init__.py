"""The local runtime: Apache Kafka (KRaft), the schema registry and PostgreSQL as local processes.

`backbone up` on a machine without Docker resolves the broker's jars with Maven, starts each
service from the data directory, waits until it really answers, and records its pid so that
`backbone down` stops exactly what `up` started. Services configured as external (settings) are
not started.
"""
