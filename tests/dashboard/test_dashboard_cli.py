"""``caraway dashboard`` / ``caraway flower``: Flower's flags, and the refusal to be exposed."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from caraway.cli.main import cli


@pytest.mark.parametrize("command", ["dashboard", "flower"])
def test_a_public_address_without_authentication_is_refused(command: str) -> None:
    result = CliRunner().invoke(cli, ["-b", "memory://", command, "--address", "0.0.0.0"])

    assert result.exit_code == 2
    assert "will not listen on 0.0.0.0 without authentication" in result.output
    assert "--basic-auth=user:password" in result.output


def test_flowers_environment_variables_are_read() -> None:
    result = CliRunner().invoke(
        cli, ["-b", "memory://", "flower"],
        env={"FLOWER_ADDRESS": "0.0.0.0", "FLOWER_BASIC_AUTH": "ann"},
    )  # fmt: skip

    assert result.exit_code == 2
    assert "user:password pairs" in result.output
