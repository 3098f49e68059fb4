"""The seed command's own logic: argument errors."""

from __future__ import annotations

import pytest

from osbake.cli import main


def test_seed_error_is_one_paragraph(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    user_data = tmp_path / "ud"
    user_data.write_text("runcmd: [ls]\n")
    code = main(["seed", "-o", str(tmp_path / "seed.iso"), "--user-data", str(user_data)])
    err = capsys.readouterr().err
    assert code == 2
    assert "error:" in err
    assert "Traceback" not in err
    assert f"{user_data}:1" in err
    assert not (tmp_path / "seed.iso").exists()
