"""A corpus of hostile inputs: recipes, elements and seeds that must be refused cleanly.

Each case is the files of a folder (text, bytes, symlinks, FIFOs), an osbake command
line, and what the refusal must say: the exit code, a fragment of the message
(what is wrong), a fragment that says where (file:line, key or flag) and, when it
matters, a fragment of the hint (how to fix it). test_hostile_inputs.py runs each
one with the real CLI and checks that nothing was left behind.

Add a case by adding a line: `recipe(...)`, `element(...)`, `seed(...)` or `Case(...)`.
In argv, {dir} is the case's folder and {out} its output folder.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Link:
    """A symlink to `target`."""

    target: str


@dataclass(frozen=True)
class Fifo:
    """A named pipe (reading it would block forever)."""


@dataclass(frozen=True)
class Big:
    """A file of `size` bytes of `fill` (written without holding it in the corpus)."""

    size: int
    fill: bytes = b"a"


FIFO = Fifo()
Content = str | bytes | Link | Fifo | Big


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    files: Mapping[str, Content]
    what: str
    where: str
    code: int = 2
    hint: str = ""
    writes: tuple[str, ...] = field(default=())  # output files that must not appear


def recipe(
    id: str,
    text: str,
    what: str,
    where: str = "",
    *,
    hint: str = "",
    files: Mapping[str, Content] | None = None,
    command: str = "build",
) -> Case:
    argv = ("build", "{dir}/recipe.yaml", "-o", "{out}")
    if command != "build":
        argv = (command, "{dir}/recipe.yaml")
    return Case(
        id=f"recipe/{id}",
        argv=argv,
        files={"recipe.yaml": text, **(files or {})},
        what=what,
        where=where,
        hint=hint,
    )


def element(
    id: str,
    spec: Content,
    what: str,
    where: str = "elements/el/element.yaml",
    *,
    hint: str = "",
    files: Mapping[str, Content] | None = None,
    recipe_text: str = "name: x\nelements: [el]\n",
) -> Case:
    return Case(
        id=f"element/{id}",
        argv=("build", "{dir}/recipe.yaml", "-o", "{out}"),
        files={"recipe.yaml": recipe_text, "elements/el/element.yaml": spec, **(files or {})},
        what=what,
        where=where,
        hint=hint,
    )


def seed(
    id: str,
    args: tuple[str, ...],
    what: str,
    where: str = "",
    *,
    hint: str = "",
    files: Mapping[str, Content] | None = None,
) -> Case:
    return Case(
        id=f"seed/{id}",
        argv=("seed", "-o", "{out}/seed.iso", *args),
        files=dict(files or {}),
        what=what,
        where=where,
        hint=hint,
        writes=("seed.iso",),
    )


def ssh_key(kind: str = "ssh-ed25519") -> str:
    """A well-formed public key line."""
    body = bytes(range(32))
    blob = struct.pack(">I", len(kind)) + kind.encode() + struct.pack(">I", 32) + body
    return f"{kind} {base64.b64encode(blob).decode()} ops@example"


LAUGHS = "\n".join(
    [
        "name: lol",
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(
            f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]"
            for p, n in zip("abcdefgh", "bcdefghi", strict=True)
        ),
        "",
    ]
)
DEEP = "name: x\noptions:\n  users: " + "[" * 200 + "]" * 200 + "\n"
DISK = "disk:\n  size: 4GiB\n  partitions:\n    - {name: root, size: rest, fs: ext4, mount: /}\n"
MOTD = {"files/motd": "hello\n"}
USERS = "name: x\nelements: [users]\noptions:\n  users:\n    users:\n"

CASES: list[Case] = [
    # -- files: src stays inside the recipe's folder ---------------------------------------
    recipe(
        "src-absolute",
        "name: x\nfiles:\n  - {src: /etc/hostname, dest: /etc/x}\n",
        "must be a path relative to the recipe's folder",
        "recipe.yaml:3, key 'files[0].src'",
        hint="copy the file there",
    ),
    recipe(
        "src-dotdot",
        "name: x\nfiles:\n  - {src: ../../../etc/hostname, dest: /etc/x}\n",
        "leaves the recipe's folder",
        "recipe.yaml:3",
        hint="inside the recipe's folder",
    ),
    recipe(
        "src-dotdot-inside-path",
        "name: x\nfiles:\n  - {src: files/../../secret, dest: /etc/x}\n",
        "leaves the recipe's folder",
        "recipe.yaml:3",
        files={**MOTD, "../secret": "s3cret\n"},
    ),
    recipe(
        "src-symlink-to-host-file",
        "name: x\nfiles:\n  - {src: hostname, dest: /etc/x}\n",
        "goes through a symlink",
        "recipe.yaml:3, key 'files[0].src'",
        hint="not a symlink",
        files={"hostname": Link("/etc/hostname")},
    ),
    recipe(
        "src-symlinked-folder",
        "name: x\nfiles:\n  - {src: etc/hostname, dest: /etc/x}\n",
        "goes through a symlink",
        "recipe.yaml:3",
        files={"etc": Link("/etc")},
    ),
    recipe(
        "src-relative-symlink-out",
        "name: x\nfiles:\n  - {src: up, dest: /etc/x}\n",
        "goes through a symlink",
        "recipe.yaml:3",
        files={"up": Link("../../../../etc/passwd")},
    ),
    recipe(
        "src-folder-holding-absolute-link",
        "name: x\nfiles:\n  - {src: site, dest: /srv/site}\n",
        "leads out of the copied folder",
        "recipe.yaml:3",
        hint="relative and point inside that folder",
        files={"site/index.html": "hi\n", "site/shadow": Link("/etc/shadow")},
    ),
    recipe(
        "src-folder-holding-escaping-link",
        "name: x\nfiles:\n  - {src: site, dest: /srv/site}\n",
        "leads out of the copied folder",
        "recipe.yaml:3",
        files={"site/deep/index.html": "hi\n", "site/deep/up": Link("../../../etc/passwd")},
    ),
    recipe(
        "src-fifo",
        "name: x\nfiles:\n  - {src: pipe, dest: /etc/x}\n",
        "not a regular file or folder",
        "recipe.yaml:3",
        files={"pipe": FIFO},
    ),
    recipe(
        "src-folder-holding-fifo",
        "name: x\nfiles:\n  - {src: site, dest: /srv/site}\n",
        "not a regular file, folder or symlink",
        "recipe.yaml:3",
        files={"site/index.html": "hi\n", "site/pipe": FIFO},
    ),
    recipe(
        "src-device",
        "name: x\nfiles:\n  - {src: /dev/zero, dest: /etc/x}\n",
        "must be a path relative",
        "recipe.yaml:3",
    ),
    recipe(
        "src-empty",
        "name: x\nfiles:\n  - {src: '', dest: /etc/x}\n",
        "must be a path relative",
        "recipe.yaml:3",
    ),
    recipe(
        "src-newline",
        'name: x\nfiles:\n  - {src: "files/motd\\n", dest: /etc/x}\n',
        "control character",
        "recipe.yaml:3",
        files=MOTD,
    ),
    recipe(
        "src-of-parent-leaves-its-folder",
        "extends: base/base.yaml\nname: x\n",
        "leaves the recipe's folder",
        "base/base.yaml:2, key 'files[0].src'",
        files={
            "base/base.yaml": "files:\n  - {src: ../secret, dest: /etc/x}\n",
            "secret": "s3cret\n",
        },
    ),
    recipe(
        "src-of-variant-through-symlink",
        "name: x\nvariants:\n  v:\n    files: [{src: link, dest: /etc/x}]\n",
        "goes through a symlink",
        "recipe.yaml:4, key 'variants.v.files[0].src'",
        files={"link": Link("/etc/hostname")},
    ),
    recipe(
        "repository-key-absolute",
        "name: x\nrepositories:\n  - name: r\n    uri: http://deb.example/debian\n"
        "    suites: [bookworm]\n    key: /etc/apt/trusted.gpg\n",
        "must be a path relative",
        "recipe.yaml:6, key 'repositories[0].key'",
    ),
    recipe(
        "repository-key-symlink",
        "name: x\nrepositories:\n  - name: r\n    uri: http://deb.example/debian\n"
        "    suites: [bookworm]\n    key: key.gpg\n",
        "goes through a symlink",
        "recipe.yaml:6",
        files={"key.gpg": Link("/etc/passwd")},
    ),
    # -- names, URLs, paths and sizes --------------------------------------------------------
    recipe(
        "name-newline",
        'name: "web\\nx"\n',
        "is not a valid name",
        "recipe.yaml:1, key 'name'",
        hint="lowercase letters",
    ),
    recipe("name-markup", 'name: "[/x]"\n', "is not a valid name", "recipe.yaml:1"),
    recipe("name-too-long", f"name: {'x' * 65}\n", "the limit is 64", "recipe.yaml:1"),
    recipe(
        "description-escape-sequence",
        'name: x\ndescription: "\\e]0;owned\\a"\n',
        "control character",
        "recipe.yaml:2, key 'description'",
    ),
    recipe(
        "release-newline",
        'name: x\nrelease: "bookworm\\nx"\n',
        "is not a valid release",
        "recipe.yaml:2",
        hint="codename",
    ),
    recipe("release-path", "name: x\nrelease: ../../x\n", "is not a valid release", ":2"),
    recipe("distro-shell", "name: x\ndistro: x;id\n", "is not a valid distro", ":2"),
    recipe(
        "mirror-space",
        'name: x\nmirror: "http://deb.example/debian main"\n',
        "is not a valid URL",
        "recipe.yaml:2, key 'mirror'",
        hint="without spaces",
    ),
    recipe(
        "mirror-no-scheme",
        "name: x\nmirror: deb.example/debian\n",
        "is not a valid URL",
        ":2",
        hint="http://",
    ),
    recipe(
        "mirror-unknown-scheme",
        "name: x\nmirror: gopher://deb.example/debian\n",
        "scheme gopher://",
        ":2",
        hint="use one of",
    ),
    recipe(
        "mirror-quote",
        "name: x\nmirror: 'http://deb.example/\"x'\n",
        "is not a valid URL",
        ":2",
    ),
    recipe(
        "mirror-no-host",
        "name: x\nmirror: http:///debian\n",
        "has no host",
        ":2",
    ),
    recipe(
        "mirror-newline",
        'name: x\nmirror: "http://deb.example/\\nTrusted: yes"\n',
        "is not a valid URL",
        ":2",
    ),
    recipe("component-space", "name: x\ncomponents: [main contrib]\n", "component", ":2"),
    recipe(
        "repository-name-path",
        "name: x\nrepositories:\n  - {name: ../x, uri: http://h/d, suites: [s]}\n",
        "is not a valid repository name",
        "recipe.yaml:3, key 'repositories[0].name'",
    ),
    recipe(
        "repository-uri-newline",
        'name: x\nrepositories:\n  - {name: r, uri: "http://h/d\\nSigned-By: /x", suites: [s]}\n',
        "is not a valid URL",
        ":3",
    ),
    recipe(
        "repository-suite-space",
        "name: x\nrepositories:\n  - {name: r, uri: http://h/d, suites: [a b]}\n",
        "is not a valid suite",
        ":3",
    ),
    recipe(
        "package-shell",
        "name: x\npackages: [curl, 'curl; rm -rf /']\n",
        "is not a valid package",
        "recipe.yaml:2, key 'packages[1]'",
        hint="Debian package name",
    ),
    recipe("package-upper-case", "name: x\npackages: [Curl]\n", "is not a valid package", ":2"),
    recipe("package-one-letter", "name: x\npackages: [a]\n", "is not a valid package", ":2"),
    recipe(
        "package-option",
        "name: x\npackages: [--allow-unauthenticated]\n",
        "is not a valid package",
        ":2",
    ),
    recipe("element-path", "name: x\nelements: [../x]\n", "is not a valid element name", ":2"),
    recipe(
        "kernel-shell",
        "name: x\nkernel: linux-image-amd64;reboot\n",
        "is not a valid kernel",
        ":2",
        hint="cloud, generic, server, none",
    ),
    recipe(
        "cmdline-newline",
        'name: x\ncmdline: "quiet\\ninit=/bin/sh"\n',
        "is not a valid word",
        "recipe.yaml:2, key 'cmdline'",
    ),
    recipe(
        "cmdline-grub-script",
        "name: x\ncmdline: quiet; insmod x\n",
        "is not a valid word",
        ":2",
        hint="no quotes, '$', ';'",
    ),
    recipe(
        "cmdline-too-long",
        f"name: x\ncmdline: {'a' * 3000}\n",
        "at most 2048",
        ":2",
    ),
    recipe("run-nul", 'name: x\nrun: ["echo a\\0b"]\n', "NUL byte", "recipe.yaml:2, key 'run[0]'"),
    recipe("run-number", "name: x\nrun: [42]\n", "must be a string", ":2"),
    recipe(
        "dest-relative",
        "name: x\nfiles:\n  - {src: files/motd, dest: etc/motd}\n",
        "is not an absolute path",
        "recipe.yaml:3, key 'files[0].dest'",
        files=MOTD,
    ),
    recipe(
        "dest-dotdot",
        "name: x\nfiles:\n  - {src: files/motd, dest: /etc/../../root/x}\n",
        "is not a normalised path",
        ":3",
        files=MOTD,
    ),
    recipe(
        "dest-tab",
        'name: x\nfiles:\n  - {src: files/motd, dest: "/etc/motd\\t0777"}\n',
        "control character",
        ":3",
        files=MOTD,
    ),
    recipe(
        "dest-newline",
        'name: x\nfiles:\n  - {src: files/motd, dest: "/etc/motd\\n1\\t-\\troot"}\n',
        "control character",
        ":3",
        files=MOTD,
    ),
    recipe(
        "mode-not-octal",
        "name: x\nfiles:\n  - {src: files/motd, dest: /etc/motd, mode: '999'}\n",
        "octal mode",
        ":3",
        files=MOTD,
    ),
    recipe(
        "mode-unquoted",
        "name: x\nfiles:\n  - {src: files/motd, dest: /etc/motd, mode: 0644}\n",
        "YAML reads 0644 as a number",
        ":3",
        files=MOTD,
    ),
    recipe(
        "owner-shell",
        "name: x\nfiles:\n  - {src: files/motd, dest: /etc/motd, owner: 'bob;id'}\n",
        "is not a valid owner",
        "recipe.yaml:3, key 'files[0].owner'",
        files=MOTD,
    ),
    recipe(
        "owner-option",
        "name: x\nfiles:\n  - {src: files/motd, dest: /etc/motd, group: -R}\n",
        "is not a valid group",
        ":3",
        files=MOTD,
    ),
    recipe(
        "owner-id-out-of-range",
        "name: x\nfiles:\n  - {src: files/motd, dest: /etc/motd, owner: '99999999999'}\n",
        "owner",
        ":3",
        files=MOTD,
    ),
    recipe(
        "disk-size-zero",
        f"name: x\n{DISK.replace('4GiB', '0')}",
        "is zero",
        "recipe.yaml:3, key 'disk.size'",
    ),
    recipe(
        "disk-size-zero-mib",
        f"name: x\n{DISK.replace('4GiB', '0MiB')}",
        "is zero",
        ":3",
    ),
    recipe(
        "disk-size-absurd",
        f"name: x\n{DISK.replace('4GiB', '99999TiB')}",
        "larger than osbake's limit of 64 TiB",
        ":3",
        hint="at most 64 TiB",
    ),
    recipe(
        "disk-size-huge-number",
        f"name: x\n{DISK.replace('4GiB', '1' * 400 + 'MiB')}",
        "is not a valid disk size",
        ":3",
    ),
    recipe(
        "partition-size-zero",
        f"name: x\n{DISK.replace('size: rest', 'size: 0KiB')}",
        "is zero",
        "key 'disk.partitions[0].size'",
    ),
    recipe(
        "partition-percent-over",
        f"name: x\n{DISK.replace('size: rest', 'size: 150%')}",
        "percentage",
        ":5",
    ),
    recipe(
        "partition-label-space",
        f"name: x\n{DISK.replace('mount: /}', 'mount: /, label: my root}')}",
        "file system label",
        ":5",
    ),
    recipe(
        "partition-mount-space",
        f"name: x\n{DISK.replace('mount: /}', 'mount: /srv/my data}')}",
        "contains a space",
        ":5",
    ),
    recipe(
        "partition-fstab-options-injection",
        "name: x\n" + DISK.replace("mount: /}", 'mount: /, options: "defaults 0 0"}'),
        "are not valid mount options",
        ":5",
    ),
    recipe(
        "alignment-zero",
        f"name: x\n{DISK.replace('size: 4GiB', 'size: 4GiB' + chr(10) + '  alignment: 0')}",
        "smaller than 512 B",
        "key 'disk.alignment'",
    ),
    recipe(
        "too-many-variants",
        "name: x\nvariants:\n" + "".join(f"  v{i}: {{}}\n" for i in range(300)),
        "the limit is 256",
        "key 'variants'",
    ),
    recipe(
        "variant-name-shell",
        "name: x\nvariants:\n  'a;b': {}\n",
        "is not a valid variant name",
        ":2",
    ),
    recipe(
        "variant-bad-package",
        "name: x\nvariants:\n  v:\n    packages: ['x y']\n",
        "in variant 'v'",
        "recipe.yaml:4, key 'variants.v.packages[0]'",
    ),
    # -- element options: values that end up in files and user databases -------------------
    recipe(
        "hostname-newline",
        'name: x\noptions:\n  base: {hostname: "web\\n10.0.0.1 bank.example"}\n',
        "is not a valid host name",
        "recipe.yaml:3, key 'options.base.hostname'",
        hint="RFC 1123",
    ),
    recipe(
        "hostname-empty-label",
        "name: x\noptions:\n  base: {hostname: web..example}\n",
        "is not a valid host name",
        ":3",
    ),
    recipe(
        "user-name-shell",
        USERS + "      - {name: 'bob;id'}\n",
        "'bob;id' is not a valid user name",
        "recipe.yaml:6, key 'options.users.users[0].name'",
        hint="start with a lower-case letter",
    ),
    recipe(
        "user-name-option",
        USERS + "      - {name: --badname}\n",
        "is not a valid user name",
        ":6",
    ),
    recipe(
        "user-group-newline",
        USERS + '      - {name: bob, groups: [adm, "wheel\\nroot"]}\n',
        "is not a valid group name",
        "key 'options.users.users[0].groups[1]'",
    ),
    recipe(
        "user-shell-relative",
        USERS + "      - {name: bob, shell: bash}\n",
        "is not an absolute path",
        ":6",
    ),
    recipe(
        "user-password-colon",
        USERS + "      - {name: bob, password: 'x:0:0'}\n",
        "is not a crypt(3) hash",
        ":6",
        hint="mkpasswd",
    ),
    recipe(
        "user-ssh-key-junk",
        USERS + "      - {name: bob, ssh_keys: ['not a key']}\n",
        "not an ssh public key",
        ":6",
    ),
    recipe(
        "user-ssh-key-two-lines",
        USERS + f'      - {{name: bob, ssh_keys: ["{ssh_key()}\\nssh-rsa AAAA evil"]}}\n',
        "control character",
        ":6",
    ),
    recipe(
        "user-uid-negative",
        USERS + "      - {name: bob, uid: -1}\n",
        "is not a valid user id",
        ":6",
    ),
    recipe(
        "user-sudo-string",
        USERS + "      - {name: bob, sudo: 'yes please'}\n",
        "must be true or false",
        ":6",
    ),
    recipe(
        "user-unknown-field",
        USERS + "      - {name: bob, home: /root}\n",
        "only the keys",
        ":6",
    ),
    recipe(
        "timezone-path",
        "name: x\nelements: [timezone]\noptions:\n  timezone: {zone: ../../../etc/shadow}\n",
        "is not a valid time zone",
        "recipe.yaml:4, key 'options.timezone.zone'",
        hint="Europe/Berlin",
    ),
    recipe(
        "locale-newline",
        'name: x\nelements: [locale]\noptions:\n  locale: {lang: "en_US.UTF-8\\nLC_ALL=x"}\n',
        "is not a valid locale",
        ":4",
    ),
    recipe(
        "apt-proxy-quote",
        "name: x\nelements: [apt-proxy]\noptions:\n"
        "  apt-proxy: {proxy: 'http://p.example:3142/\";evil'}\n",
        "is not a valid URL",
        ":4",
    ),
    recipe(
        "packages-remove-glob",
        "name: x\noptions:\n  packages: {remove: ['*']}\n",
        "is not a valid package name",
        "key 'options.packages.remove[0]'",
    ),
    recipe(
        "server-kernel-keep-escape",
        "name: x\nkernel: server\noptions:\n  server-kernel: {keep: [../../../etc]}\n",
        "leaves /lib/modules/<version>/kernel/",
        ":4",
    ),
    recipe(
        "lean-translation-glob",
        "name: x\nelements: [lean]\noptions:\n  lean: {translations: ['*']}\n",
        "is not a valid locale",
        ":4",
    ),
    recipe(
        "cloud-init-datasource-yaml",
        "name: x\nelements: [cloud-init]\noptions:\n  cloud-init: {datasources: ['x ]\\n']}\n",
        "is not a valid",
        ":4",
    ),
    recipe(
        "option-choice",
        "name: x\nelements: [openssh-server]\noptions:\n"
        "  openssh-server: {permit_root_login: 'yes\\nPermitEmptyPasswords yes'}\n",
        "must be one of",
        ":4",
    ),
    # -- YAML itself --------------------------------------------------------------------------
    recipe(
        "billion-laughs",
        LAUGHS,
        "expands to more than 250,000 values",
        "recipe.yaml:",
        hint="aliases",
    ),
    recipe(
        "recursive-alias",
        "name: x\npackages: &a [*a]\n",
        "recursive alias",
        "recipe.yaml:2",
    ),
    recipe("nested-too-deep", DEEP, "nested", "recipe.yaml", hint="levels deep"),
    recipe(
        "file-too-large",
        "",
        "larger than the limit of 4 MiB",
        "recipe.yaml",
        hint="4 MiB",
        files={"recipe.yaml": Big(5 * 1024 * 1024)},
    ),
    recipe(
        "recipe-is-fifo",
        "",
        "is not a regular file",
        "recipe.yaml",
        files={"recipe.yaml": FIFO},
    ),
    recipe(
        "not-utf8",
        "",
        "not UTF-8",
        "recipe.yaml:2",
        files={"recipe.yaml": b"name: x\ndescription: \xff\xfe\n"},
    ),
    recipe(
        "huge-integer",
        f"name: x\ndescription: {'9' * 5000}\n",
        "is not a valid number",
        "recipe.yaml:2",
    ),
    recipe(
        "float-tag-on-text",
        "name: x\ndescription: !!float abc\n",
        "is not a valid number",
        "recipe.yaml:2",
    ),
    recipe(
        "binary-value",
        "name: x\nrelease: !!binary Ym9va3dvcm0=\n",
        "is not allowed here",
        "recipe.yaml:2",
    ),
    recipe(
        "python-object-tag",
        "name: x\nrelease: !!python/object/apply:os.system [id]\n",
        "not valid YAML",
        "recipe.yaml:2",
    ),
    recipe(
        "key-is-a-list",
        "name: x\n? [a, b]\n: c\n",
        "a key must be a plain word",
        "recipe.yaml:2",
    ),
    recipe("duplicate-key", "name: x\nname: y\n", "appears twice", "recipe.yaml:2"),
    recipe("top-is-a-list", "- name: x\n", "must be a YAML mapping", "recipe.yaml:1"),
    recipe("empty-file", "", "the key 'name' is required", "recipe.yaml"),
    recipe("yaml-syntax", "name: x\npackages: [curl\n", "not valid YAML", "recipe.yaml:"),
    # -- extends ------------------------------------------------------------------------------
    recipe(
        "extends-itself",
        "name: x\nextends: recipe.yaml\n",
        "extends itself",
        "recipe.yaml:2, key 'extends'",
        hint="cannot build on itself",
    ),
    recipe(
        "extends-cycle",
        "name: x\nextends: [a.yaml]\n",
        "cycle",
        "b.yaml:1, key 'extends[1]'",
        files={
            "a.yaml": "extends: b.yaml\n",
            "b.yaml": "extends: [c.yaml, a.yaml]\n",
            "c.yaml": "",
        },
    ),
    recipe(
        "extends-fifo",
        "name: x\nextends: pipe.yaml\n",
        "is not a regular file",
        "recipe.yaml:2",
        files={"pipe.yaml": FIFO},
    ),
    recipe(
        "extends-not-a-list",
        "name: x\nextends: {a: 1}\n",
        "must be a file name or a list",
        "recipe.yaml:2",
    ),
    recipe(
        "extends-chain-too-long",
        "name: x\nextends: r1.yaml\n",
        "more than 32 files",
        "key 'extends'",
        files={f"r{i}.yaml": f"extends: r{i + 1}.yaml\n" for i in range(1, 40)} | {"r40.yaml": ""},
    ),
    recipe(
        "extends-billion-laughs",
        "name: x\nextends: lol.yaml\n",
        "expands to more than",
        "lol.yaml",
        files={"lol.yaml": LAUGHS},
    ),
    # -- other commands ------------------------------------------------------------------------
    recipe(
        "validate-src-absolute",
        "name: x\nfiles:\n  - {src: /etc/shadow, dest: /etc/x}\n",
        "must be a path relative",
        "recipe.yaml:3",
        command="validate",
    ),
    recipe(
        "plan-user-name",
        USERS + "      - {name: 'bob;id'}\n",
        "is not a valid user name",
        "recipe.yaml:6",
        command="plan",
    ),
    Case(
        "cli/unknown-variant",
        ("build", "{dir}/recipe.yaml", "-o", "{out}", "--variant", "a\x1b[2Jb"),
        {"recipe.yaml": "name: x\nvariants:\n  v: {}\n"},
        "has no variant",
        "recipe.yaml",
        hint="variants defined: v",
    ),
    Case(
        "cli/recipe-is-a-folder",
        ("build", "{dir}/folder", "-o", "{out}"),
        {"folder/x": ""},
        "is a directory",
        "folder",
    ),
    Case(
        "cli/recipe-is-a-device",
        ("validate", "/dev/zero"),
        {},
        "is not a regular file",
        "/dev/zero",
    ),
    # -- elements from the recipe's own folder -------------------------------------------------
    element(
        "billion-laughs",
        LAUGHS.replace("name: lol\n", ""),
        "expands to more than",
        "elements/el/element.yaml:",
    ),
    element(
        "too-large",
        Big(2 * 1024 * 1024, b"#"),
        "larger than the limit of 1 MiB",
        "element.yaml",
    ),
    element(
        "folder-is-a-symlink",
        "",
        "its folder is a symlink",
        "elements/el2",
        hint="inside its folder",
        recipe_text="name: x\nelements: [el2]\n",
        files={
            "../outside/el2/element.yaml": "description: from elsewhere\n",
            "elements/el2": Link("../../outside/el2"),
        },
    ),
    element(
        "yaml-is-a-symlink",
        Link("/etc/os-release"),
        "element.yaml is a symlink",
        "elements/el/element.yaml",
    ),
    element(
        "static-link-to-host",
        "description: x\n",
        "leads out of static/",
        "elements/el/static/etc/shadow",
        hint="relative link",
        files={"elements/el/static/etc/shadow": Link("/etc/shadow")},
    ),
    element(
        "static-is-a-symlink",
        "description: x\n",
        "'static' is a symlink",
        "elements/el/static",
        files={"elements/el/static": Link("/etc")},
    ),
    element(
        "static-fifo",
        "description: x\n",
        "not a regular file",
        "elements/el/static/run/pipe",
        files={"elements/el/static/run/pipe": FIFO},
    ),
    element(
        "script-link-out",
        "description: x\n",
        "leads out of the element's folder",
        "elements/el/install/10-x",
        files={"elements/el/install/10-x": Link("/bin/sh")},
    ),
    element(
        "phase-folder-symlink",
        "description: x\n",
        "'install' is a symlink",
        "elements/el/install",
        files={"elements/el/install": Link("/usr/sbin")},
    ),
    element(
        "environment-path",
        "environment: {PATH: /tmp/evil}\n",
        "may not set PATH",
        "elements/el/element.yaml:1",
    ),
    element(
        "environment-ld-preload",
        "environment: {LD_PRELOAD: /tmp/evil.so}\n",
        "may not set LD_PRELOAD",
        ":1",
    ),
    element(
        "environment-bad-name",
        "environment: {'A=B': x}\n",
        "is not a valid variable name",
        ":1",
    ),
    element(
        "environment-value-newline",
        'environment: {FOO: "a\\nb"}\n',
        "control character",
        ":1",
    ),
    element(
        "option-name",
        "options:\n  'x y': {type: string}\n",
        "is not a valid option name",
        "element.yaml:2",
    ),
    element(
        "option-format-unknown",
        "options:\n  x: {type: string, format: shell-code}\n",
        "is not allowed",
        "element.yaml:2",
        hint="use one of",
    ),
    element(
        "option-default-bad-format",
        'options:\n  host: {type: string, format: hostname, default: "a\\nb"}\n',
        "is not a valid host name",
        "element.yaml:2",
    ),
    element(
        "package-shell",
        "packages: ['curl;id']\n",
        "is not a valid package",
        "element.yaml:1",
    ),
    element(
        "cmdline-two-words",
        "cmdline: ['quiet splash']\n",
        "is not one kernel command-line argument",
        "element.yaml:1",
    ),
    element(
        "depends-path",
        "depends: [../../x]\n",
        "is not a valid element name",
        "element.yaml:1",
    ),
    element(
        "not-a-mapping",
        "- a\n- b\n",
        "must be a mapping",
        "element.yaml:1",
    ),
    element(
        "record-field-control",
        "options:\n  items: {type: records, fields: [name], default: []}\n",
        "control character",
        "recipe.yaml:5",
        recipe_text='name: x\nelements: [el]\noptions:\n  el:\n    items: [{name: "a\\u001fb"}]\n',
    ),
    Case(
        "element/recipe-elements-folder-symlink",
        ("build", "{dir}/recipe.yaml", "-o", "{out}"),
        {
            "recipe.yaml": "name: x\nelements: [el]\n",
            "../outside/el/element.yaml": "description: from elsewhere\n",
            "elements": Link("../outside"),
        },
        "elements folder",
        "elements",
        hint="real folder",
    ),
    # -- osbake seed ----------------------------------------------------------------------------
    seed(
        "hostname-newline",
        ("--hostname", "web\n10.0.0.1 bank"),
        "is not a valid host name",
        "--hostname",
    ),
    seed("user-shell", ("--user", "bob;id"), "is not a valid user name", "--user"),
    seed("instance-id-space", ("--instance-id", "a b"), "instance id", "--instance-id"),
    seed(
        "user-data-billion-laughs",
        ("--user-data", "{dir}/user-data"),
        "expands to more than",
        "user-data",
        files={"user-data": "#cloud-config\n" + LAUGHS.replace("name: lol\n", "")},
    ),
    seed(
        "user-data-dev-zero",
        ("--user-data", "/dev/zero"),
        "larger than the limit of 16 MiB",
        "/dev/zero",
    ),
    seed(
        "user-data-user-name",
        ("--user-data", "{dir}/user-data"),
        "is not a valid user name",
        "user-data",
        files={"user-data": "#cloud-config\nusers:\n  - {name: 'bob;id'}\n"},
    ),
    seed(
        "user-data-group-name",
        ("--user-data", "{dir}/user-data"),
        "is not a valid group name",
        "user-data",
        files={"user-data": "#cloud-config\nusers:\n  - {name: bob, groups: 'adm, x y'}\n"},
    ),
    seed(
        "user-data-keys-not-a-list",
        ("--user-data", "{dir}/user-data", "--user", "ops"),
        "must be a list of public keys",
        "user-data",
        files={"user-data": "#cloud-config\nusers:\n  - {name: ops, ssh_authorized_keys: 5}\n"},
    ),
    seed(
        "user-data-huge-number",
        ("--user-data", "{dir}/user-data"),
        "is not a valid number",
        "user-data:2",
        files={"user-data": f"#cloud-config\nx: {'9' * 5000}\n"},
    ),
    seed(
        "user-data-impossible-date",
        ("--user-data", "{dir}/user-data"),
        "is not a valid date",
        "user-data:2",
        files={"user-data": "#cloud-config\nwhen: 2024-13-45\n"},
    ),
    seed(
        "user-data-not-utf8",
        ("--user-data", "{dir}/user-data"),
        "not UTF-8",
        "user-data",
        files={"user-data": b"#cloud-config\nx: \xff\n"},
    ),
    seed(
        "meta-data-hostname",
        ("--meta-data", "{dir}/meta-data"),
        "is not a valid host name",
        "local-hostname",
        files={"meta-data": 'local-hostname: "a\\nb"\n'},
    ),
    seed(
        "meta-data-binary-in-json",
        ("--format", "configdrive", "--meta-data", "{dir}/meta.json"),
        "is not allowed here",
        "meta.json:1",
        files={"meta.json": "{x: !!binary aGk=}\n"},
    ),
    seed(
        "ssh-key-private",
        ("--ssh-key", "{dir}/id"),
        "PRIVATE",
        "id",
        hint=".pub",
        files={"id": "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n"},
    ),
    seed(
        "ssh-key-escape",
        ("--ssh-key", "{dir}/id.pub"),
        "control character",
        "id.pub:1",
        files={"id.pub": ssh_key() + "\x1b[2J\n"},
    ),
    seed(
        "network-config-version",
        ("--network-config", "{dir}/net"),
        "has no 'version: 1' or 'version: 2'",
        "net",
        files={"net": "version: 3\n"},
    ),
    seed(
        "network-data-list-ids",
        ("--format", "configdrive", "--network-config", "{dir}/net.json"),
        "every link needs an 'id' and a 'type'",
        "net.json",
        files={"net.json": '{"links": [{"id": [1], "type": "phy"}]}\n'},
    ),
    seed(
        "network-config-nested",
        ("--network-config", "{dir}/net"),
        "nested",
        "net",
        files={"net": "version: 2\nethernets: " + "[" * 100 + "]" * 100 + "\n"},
    ),
]
