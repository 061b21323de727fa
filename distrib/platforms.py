"""Platforms (issue 18, item 3): OCI `os/architecture[/variant]` names, the host's from
`uname -m`, and whether an image can run on a host. Pure.

OCI names (image-spec config.md, the Go GOARCH values): `amd64`, `arm64`, `arm` (variants v6,
v7), `386`, `ppc64le`, `s390x`, `riscv64`, `mips64le`, `loong64`. `uname -m` and `docker info`
(`Architecture`) print the kernel's names (`x86_64`, `aarch64`, `armv7l`), normalised here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

# kernel / other spellings -> (OCI architecture, variant)
_MACHINES: dict[str, tuple[str, str]] = {
    "x86_64": ("amd64", ""),
    "x86-64": ("amd64", ""),
    "amd64": ("amd64", ""),
    "aarch64": ("arm64", ""),
    "arm64": ("arm64", ""),
    "armv8l": ("arm", "v8"),  # a 32-bit userland on a 64-bit ARM CPU
    "armv7l": ("arm", "v7"),
    "armv7": ("arm", "v7"),
    "armhf": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "armel": ("arm", "v6"),
    "arm": ("arm", ""),
    "i386": ("386", ""),
    "i486": ("386", ""),
    "i586": ("386", ""),
    "i686": ("386", ""),
    "386": ("386", ""),
    "ppc64le": ("ppc64le", ""),
    "s390x": ("s390x", ""),
    "riscv64": ("riscv64", ""),
    "mips64": ("mips64", ""),
    "mips64el": ("mips64le", ""),
    "mips64le": ("mips64le", ""),
    "loongarch64": ("loong64", ""),
    "loong64": ("loong64", ""),
}
_NAME = re.compile(r"^[a-z0-9_]+$")


def normalise_arch(machine: str) -> tuple[str, str]:
    """(OCI architecture, variant) of a kernel or OCI name; unknown names pass through
    lowercased (compared as written, never guessed)."""
    text = machine.strip().lower()
    return _MACHINES.get(text, (text, ""))


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        """`linux/amd64`, `linux/arm64/v8`, `linux/arm/v7` (as `docker pull --platform`);
        architecture spellings are normalised (`linux/x86_64` is `linux/amd64`)."""
        parts = text.strip().lower().split("/")
        if len(parts) not in (2, 3) or not all(_NAME.match(p) for p in parts):
            raise ValueError(
                f"must be OS/ARCH[/VARIANT] like linux/amd64 or linux/arm/v7, not {text!r}"
            )
        arch, implied = normalise_arch(parts[1])
        return cls(parts[0], arch, parts[2] if len(parts) == 3 else implied)

    @classmethod
    def of_host(cls, machine: str, os_name: str = "linux") -> Platform | None:
        """A host's platform from its `uname -m` (None when the probe did not say)."""
        if not machine.strip():
            return None
        arch, variant = normalise_arch(machine)
        return cls(os_name.strip().lower() or "linux", arch, variant)

    @classmethod
    def of_image(cls, os_name: str, architecture: str, variant: str = "") -> Platform | None:
        """An image's platform from its config (None when the config names none)."""
        if not architecture.strip():
            return None
        arch, implied = normalise_arch(architecture)
        return cls(os_name.strip().lower() or "linux", arch, variant.strip().lower() or implied)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def runs_on(self, host: Platform) -> bool:
        """Whether an image of this platform runs on `host`: same OS and architecture; a
        variant counts only when both name one (arm64 images rarely say v8), and an ARM
        host runs older variants (a v7 host runs v6 images)."""
        if (self.os, self.architecture) != (host.os, host.architecture):
            return False
        if not self.variant or not host.variant:
            return True
        return _variant_rank(self.variant) <= _variant_rank(host.variant)

    @property
    def arch(self) -> str:
        return "/".join(p for p in (self.architecture, self.variant) if p)


def _variant_rank(variant: str) -> int:
    digits = variant.lstrip("v")
    return int(digits) if digits.isdigit() else 0


def refusals(
    images: Sequence[tuple[str, Platform | None] | tuple[str, Platform | None, Sequence[Platform]]],
    host: Platform | None,
) -> list[str]:
    """One line per image that cannot run on `host`: `demo/web:1.0 is linux/amd64, the
    host is linux/arm64`, or for a multi-platform source (a third item: the platforms it
    offers) `demo/web:1.0 has no image for linux/arm/v7 (the source offers linux/amd64,
    linux/arm64)`. Nothing is refused when the host's or an image's platform is unknown (an
    old probe, an image config without architecture)."""
    if host is None:
        return []
    out = []
    for ref, platform, *rest in images:
        if platform is None or platform.runs_on(host):
            continue
        offered = rest[0] if rest else ()
        out.append(
            offered_line(ref, offered, host)
            if offered
            else f"{ref} is {platform}, the host is {host}"
        )
    return out


def best_match(offered: Sequence[Platform | None], host: Platform | None) -> int | None:
    """Which of a multi-platform source's images (an OCI index, a registry's manifest list)
    a host gets: one that runs there (`runs_on`), the host's own variant first, then the
    newest variant it runs (an arm/v7 host: v7, then v6), an image naming no platform last.
    None when none runs there (the host is refused); a host whose platform is unknown gets
    the first."""
    if not offered:
        return None
    if host is None:
        return 0
    best: int | None = None
    best_score = (-1, -1)
    for index, platform in enumerate(offered):
        if platform is None:
            score = (0, 0)
        elif platform.runs_on(host):
            same = platform.variant == host.variant
            score = (2 if same else 1, _variant_rank(platform.variant))
        else:
            continue
        if score > best_score:
            best, best_score = index, score
    return best


def offered_line(ref: str, offered: Sequence[Platform], host: Platform) -> str:
    """The refusal of a host whose platform a multi-platform source lacks."""
    return f"{ref} has no image for {host} (the source offers {', '.join(map(str, offered))})"
