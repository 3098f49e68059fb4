"""osbake: an OS image factory."""

__version__ = "0.1.0"
