"""`emit` connects while it validates (`backbone.cli.connecting`), and librdkafka stays quiet unless it publishes.

Run against a broker and registry that are not there: connecting fails, and what a user sees of that
depends only on whether the command went on to publish.
"""

from __future__ import annotations

import pytest

from backbone.cli.connecting import EarlyConnection, HeldLogs
from backbone.errors import ServiceUnavailableError
from backbone.kafka import topics as catalog


@pytest.fixture(autouse=True)
def unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKBONE_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("BACKBONE_SCHEMA_REGISTRY_URL", "http://127.0.0.1:1")


def test_a_connection_never_used_says_nothing_of_an_unreachable_broker(capfd: pytest.CaptureFixture[str]) -> None:
    connection = EarlyConnection(catalog.TIME_ENTRIES, timeout=1.0)
    connection._asking.join()  # the broker refused it several times meanwhile
    connection.close()
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


def test_publishing_over_it_raises_the_broker_error_and_shows_librdkafka_lines(
    capfd: pytest.CaptureFixture[str],
) -> None:
    connection = EarlyConnection(catalog.TIME_ENTRIES, timeout=1.0)
    with pytest.raises(ServiceUnavailableError, match=r"Kafka at 127\.0\.0\.1:1 is not reachable"):
        connection.ready()
    connection.close()
    err = capfd.readouterr().err
    assert "librdkafka: FAIL" in err and "Connect to ipv4#127.0.0.1:1 failed: Connection refused" in err


def test_held_lines_are_bounded_and_the_rest_counted(capsys: pytest.CaptureFixture[str]) -> None:
    logs = HeldLogs()
    for attempt in range(150):
        logs.log(3, "FAIL attempt %d", attempt)
    assert capsys.readouterr().err == ""
    logs.show()
    logs.log(3, "later")
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "librdkafka: FAIL attempt 0" and lines[99] == "librdkafka: FAIL attempt 99"
    assert lines[100:] == ["librdkafka: ... and 50 more lines", "librdkafka: later"]
