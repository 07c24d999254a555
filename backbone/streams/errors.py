"""How the processor runtime sorts failures: retry the call, abort the transaction, or stop.

librdkafka classifies its own errors (`retriable()`, `txn_requires_abort()`, `fatal()`); a handler's
`ServiceUnavailableError` (the schema registry is down, say) is not the record's fault either, so the
batch is aborted and tried again rather than dead-lettered.
"""

from __future__ import annotations

from enum import Enum

from confluent_kafka import KafkaError, KafkaException

from backbone.errors import BackboneError, ServiceUnavailableError

EXIT_FATAL = 75
"""Exit status after a fatal Kafka error (EX_TEMPFAIL): nothing was committed that should not be; restart."""
EXIT_BUG = 70
"""Exit status when the runtime itself failed (EX_SOFTWARE)."""


class Remedy(Enum):
    RETRY = "retry"
    ABORT = "abort"
    FATAL = "fatal"


def remedy_for(error: BaseException) -> Remedy:
    """What the loop does about `error` raised by a Kafka call or a handler."""
    if isinstance(error, ServiceUnavailableError):
        return Remedy.ABORT
    if isinstance(error, KafkaException):
        kafka_error: KafkaError = error.args[0]
        if kafka_error.fatal():
            return Remedy.FATAL
        if kafka_error.txn_requires_abort():
            return Remedy.ABORT
        if kafka_error.retriable():
            return Remedy.RETRY
        return Remedy.ABORT
    return Remedy.FATAL


class FatalStreamError(BackboneError):
    """The worker cannot go on (fenced by a newer holder of its slot, a fatal producer error, ...)."""

    exit_code = EXIT_FATAL


class SlotTakenError(BackboneError):
    """Another live process on this host holds the worker slot."""

    exit_code = EXIT_FATAL
