"""The two base classes every KubeStash and Kubernetes type derives from.

Python attributes are snake_case; the wire format is the camelCase of
KubeStash's Go structs, produced by an alias generator so the two never drift.
Where Go spells a name in a way camelCase cannot reproduce (``insecureTLS``,
``snapshotID``) the field carries an explicit alias.

Strictness follows a structural CRD schema:

* :class:`KubeModel` -- KubeStash's own types. Unknown fields are rejected, as
  ``kubectl apply`` with strict field validation rejects them.
* :class:`K8sModel` -- Kubernetes types embedded in KubeStash objects (volume
  sources, pod templates, env vars). We type the fields we read and preserve
  the rest verbatim, so a manifest written for any Kubernetes version passes
  through unchanged.

Serialising with ``exclude_unset`` (see :func:`to_wire`) reproduces exactly
what the user wrote: defaults are applied by admission, not invented on output.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class KubeModel(BaseModel):
    """A strict KubeStash type: unknown fields are errors."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        extra="forbid",
        use_attribute_docstrings=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The object as it would be sent to the API server (camelCase, only set fields)."""
        return self.model_dump(by_alias=True, exclude_unset=True, mode="json")


class K8sModel(KubeModel):
    """A Kubernetes type embedded in a KubeStash object: unknown fields are preserved."""

    model_config = ConfigDict(extra="allow")
