"""What a deploy did: the report `osbake deploy` prints and `--json` gives."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class SeedPartition:
    number: int
    start: int  # bytes
    size: int  # bytes
    label: str
    filesystem: str


@dataclass
class GrowReport:
    partition: int
    old_size: int  # bytes
    new_size: int  # bytes
    filesystem: str | None
    filesystem_grown: bool


@dataclass
class DeployReport:
    """What a deploy did; `to_json()` for machines."""

    image: str
    target: str
    target_kind: str
    format: str
    image_size: int
    target_size: int
    written: int = 0  # bytes of data written
    skipped: int = 0  # bytes of zeros not written
    seconds: float = 0.0
    artifact_sha256: str | None = None
    checksum_source: str | None = None  # where the expected sha256 came from
    content_digest: str | None = None
    verified: bool = False
    table: str | None = None
    gpt_relocated: bool = False
    seed: SeedPartition | None = None
    grown: GrowReport | None = None
    partitions_reread: bool | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
