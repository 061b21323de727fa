"""Docker image references: validation against Docker's reference grammar, normalisation.

Grammar (distribution/reference, reference.go):
    reference  := name [ ":" tag ] [ "@" digest ]
    name       := [domain "/"] path-component ["/" path-component]*
    domain     := domain-component ["." domain-component]* [":" port]
    path-component := [a-z0-9]+ (separator [a-z0-9]+)*   separator := [_.] | "__" | "-"+
    tag        := [\\w][\\w.-]{0,127}
A reference that passes this grammar can contain no shell metacharacter, space or leading "-";
we still quote every remote argument (defence in depth).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ALNUM = r"[a-z0-9]+"
_SEP = r"(?:[._]|__|-+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEP}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(
    rf"^(?P<name>(?:(?P<domain>{_DOMAIN})/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$"
)
NAME_TOTAL_LENGTH_MAX = 255


class InvalidReference(ValueError):
    """Raised by `parse` with a reason suitable for a config error message."""


@dataclass(frozen=True, order=True)
class ImageRef:
    """A validated image reference. `str()` gives the normalised form (`:latest` added)."""

    name: str  # repository, as written (e.g. "demo/web", "registry:5000/team/app")
    tag: str | None
    digest: str | None

    @classmethod
    def parse(cls, text: str) -> ImageRef:
        """Validate `text` against Docker's grammar; raise InvalidReference saying why not."""
        if not isinstance(text, str) or not text:
            raise InvalidReference("an image reference must be a non-empty string")
        if text != text.strip() or any(c.isspace() for c in text):
            raise InvalidReference(f"invalid image reference {text!r}: contains white space")
        if text.startswith("-"):
            raise InvalidReference(f"invalid image reference {text!r}: starts with '-'")
        match = _REFERENCE.match(text)
        if not match:
            bad = sorted({c for c in text if not (c.isalnum() or c in "._-/:@")})
            why = f"character(s) {''.join(bad)!r} not allowed" if bad else "does not match"
            raise InvalidReference(
                f"invalid image reference {text!r}: {why} "
                "(expected [registry[:port]/]name[:tag][@digest], lowercase name)"
            ) from None
        name = match.group("name")
        domain = match.group("domain")
        # Docker only treats the first component as a registry when it looks like one;
        # otherwise it is a path component and must be lowercase.
        looks_like_registry = (
            "." in domain or ":" in domain or domain == "localhost" if domain else True
        )
        if not looks_like_registry and domain != domain.lower():
            raise InvalidReference(
                f"invalid image reference {text!r}: repository name must be lowercase"
            )
        if len(name) > NAME_TOTAL_LENGTH_MAX:
            raise InvalidReference(f"invalid image reference {text!r}: name longer than 255")
        tag = match.group("tag")
        digest = match.group("digest")
        if tag is None and digest is None:
            tag = "latest"
        return cls(name, tag, digest)

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out

    @property
    def familiar(self) -> str:
        """The form `docker images` prints (docker.io/ and library/ removed)."""
        name = self.name
        for prefix in ("docker.io/", "index.docker.io/"):
            if name.startswith(prefix):
                name = name[len(prefix) :]
                if name.startswith("library/") and name.count("/") == 1:
                    name = name[len("library/") :]
        out = name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out
