"""The exceptions osbake raises.

Library code raises these and never prints or exits; the CLI and the service turn
them into messages, exit codes and job states. Each class's docstring is its
default message.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Location:
    """Where in an input a problem is: a file and line, and the key path inside it."""

    file: Path | None = None
    line: int | None = None
    column: int | None = None
    key: str | None = None

    def __str__(self) -> str:
        parts: list[str] = []
        if self.file is not None:
            where = str(self.file)
            if self.line is not None:
                where += f":{self.line}"
            parts.append(where)
        if self.key:
            parts.append(f"key '{self.key}'")
        return ", ".join(parts) if parts else "<unknown>"


class OsbakeError(Exception):
    """osbake failed."""

    exit_code = 1

    def __init__(
        self,
        message: str | None = None,
        *,
        hint: str | None = None,
        location: Location | None = None,
    ) -> None:
        self.message = message or (self.__doc__ or "").strip()
        self.hint = hint
        self.location = location
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.render()

    def render(self) -> str:
        """One paragraph: where, what, and how to fix it."""
        text = f"{self.location}: {self.message}" if self.location else self.message
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class RecipeError(OsbakeError):
    """The recipe is not valid."""

    exit_code = 2


class ElementError(OsbakeError):
    """An element is not valid."""

    exit_code = 2


class ResolveError(OsbakeError):
    """The elements of the recipe do not fit together."""

    exit_code = 2


class UsageError(OsbakeError):
    """The command was called the wrong way."""

    exit_code = 2


class DistroError(OsbakeError):
    """The distribution could not be set up."""


class HostError(OsbakeError):
    """This machine lacks something the build needs."""

    exit_code = 3


class SandboxError(OsbakeError):
    """Could not enter the image tree."""


class CommandError(OsbakeError):
    """A command failed."""

    def __init__(
        self,
        argv: list[str],
        returncode: int,
        tail: list[str],
        *,
        hint: str | None = None,
        what: str | None = None,
    ) -> None:
        self.argv = argv
        self.returncode = returncode
        self.tail = tail
        name = what or (Path(argv[0]).name if argv else "command")
        message = f"{name} exited with status {returncode}"
        if tail:
            message += ":\n" + "\n".join(f"    {line}" for line in tail)
        super().__init__(message, hint=hint)


class StepError(OsbakeError):
    """A build step failed."""

    def __init__(self, step: str, cause: OsbakeError) -> None:
        self.step = step
        self.cause = cause
        super().__init__(
            f"step '{step}' failed: {cause.message}", hint=cause.hint, location=cause.location
        )
        self.exit_code = cause.exit_code


class OutputError(OsbakeError):
    """An output could not be written."""


class ArtifactError(OsbakeError):
    """The artifact is not one osbake can read."""

    exit_code = 2


class DeployError(OsbakeError):
    """The image could not be written to the target."""


class Interrupted(OsbakeError):
    """The build was interrupted; nothing was left behind."""

    exit_code = 130


class PublishError(OsbakeError):
    """Publishing or syncing images failed."""


class VerifyError(OsbakeError):
    """A signature or checksum did not verify; the file was refused."""

    exit_code = 4


class BootError(OsbakeError):
    """The image did not show what was expected on its console."""
