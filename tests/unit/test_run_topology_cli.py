"""`backbone run topology` refuses what cannot work, before it starts anything."""

from __future__ import annotations

from click.testing import CliRunner

from backbone.cli.main import cli


def test_the_confluent_transport_is_refused_with_the_reason_and_exit_2() -> None:
    result = CliRunner().invoke(cli, ["run", "topology", "--transport", "confluent"])
    assert result.exit_code == 2
    assert "never consumes a record" in result.output
    assert "--transport kafka" in result.output
