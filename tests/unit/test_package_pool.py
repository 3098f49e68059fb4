"""One package pool for every arch: a build gets its own arch's and arch-independent files."""

from __future__ import annotations

from pathlib import Path

from osbake import package_pool


def test_a_build_checks_out_its_arch_and_all(tmp_path: Path) -> None:
    pool = tmp_path / "pool"
    pool.mkdir()
    names = [
        "bash_5.2.15-2+b2_amd64.deb",
        "bash_5.2.15-2+b2_arm64.deb",
        "bash_5.2.15-2+b2_i386.deb",
        "tzdata_2024a-0+deb12u1_all.deb",
        "libc6-udeb_2.36-9_arm64.udeb",
    ]
    for name in names:
        (pool / name).write_bytes(b"x")
    arm = tmp_path / "arm64"
    assert package_pool.check_out(pool, arm, "arm64") == 3
    assert sorted(p.name for p in arm.glob("*.*deb")) == [
        "bash_5.2.15-2+b2_arm64.deb",
        "libc6-udeb_2.36-9_arm64.udeb",
        "tzdata_2024a-0+deb12u1_all.deb",
    ]
    every = tmp_path / "every"
    assert package_pool.check_out(pool, every) == len(names)
    # What an arm64 build downloads goes back into the one pool.
    (arm / "zstd_1.5.4+dfsg2-5_arm64.deb").write_bytes(b"z")
    assert package_pool.check_in(pool, arm) == 1
    assert (pool / "zstd_1.5.4+dfsg2-5_arm64.deb").is_file()
