"""The disk layer: layouts, filesystems built offline, partition tables, bootloaders.

Nothing here uses loop devices, device-mapper or host mounts: filesystems are made
from the tree into the image file at their offsets, the partition table is written
into the file, and the bootloader is installed into the file.
"""
