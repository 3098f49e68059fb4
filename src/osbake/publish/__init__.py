"""Publishing images as simplestreams and syncing them into mirrors and clouds.

The library API (the CLI and the build console call the same functions):

- `publish(paths, repo, label=..., sign=..., keep=..., events=...)`: add builds
  (artifacts or manifests) to a simplestreams tree.
- `publish_streams(repo, daily=[...], released=[...], ...)`: make the daily and
  released streams list exactly the given builds.
- `sync(source, target, keyring=..., filters=..., max_versions=..., jobs=...)`:
  mirror a tree (ours or anyone's) into a directory, Glance or EC2.
"""

from osbake.publish.streams import Label, Stream
from osbake.publish.tree import (
    PublishedVersion,
    PublishResult,
    Release,
    publish,
    publish_streams,
)

__all__ = [
    "Label",
    "PublishResult",
    "PublishedVersion",
    "Release",
    "Stream",
    "publish",
    "publish_streams",
]
