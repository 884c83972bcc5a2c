"""polyframe-dashboards (cli): writes what is stale; --check says what differs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from polyframe_dashboards import cli


def test_render_is_one_file_per_uid_and_stable() -> None:
    first, second = cli.render(), cli.render()
    assert first == second
    for name, text in first.items():
        assert json.loads(text)["uid"] == name.removesuffix(".json")
        assert text.endswith("}\n")


def test_writes_then_checks_clean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--check", "--out", str(tmp_path)]) == 1
    assert cli.main(["--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(cli.render())
    capsys.readouterr()
    assert cli.main(["--check", "--out", str(tmp_path)]) == 0
    assert cli.main(["--out", str(tmp_path)]) == 0
    assert "wrote" not in capsys.readouterr().out  # nothing stale, nothing rewritten


def test_check_names_a_hand_edit_and_a_stray_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli.main(["--out", str(tmp_path)])
    edited = tmp_path / "polyframe-overview.json"
    edited.write_text(edited.read_text().replace("Polyframe / Overview", "Overview"))
    (tmp_path / "old.json").write_text("{}\n")
    capsys.readouterr()
    assert cli.main(["--check", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "polyframe-overview.json" in err
    assert "old.json" in err
