"""Top-level objects: apiVersion, kind, metadata, and the kind registry hooks.

Each kind class declares its ``API_VERSION`` and ``KIND``; both are filled in
when absent (objects built in code) and checked when present (objects read
from YAML), so a BackupStorage can never be decoded as a Repository.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from kubestash.api.base import KubeModel
from kubestash.api.k8s import ObjectMeta


class Resource(KubeModel):
    API_VERSION: ClassVar[str] = ""
    KIND: ClassVar[str] = ""

    api_version: str = ""
    kind: str = ""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)

    @model_validator(mode="before")
    @classmethod
    def _fill_type_meta(cls, data: Any) -> Any:
        if isinstance(data, dict) and cls.KIND:
            data = dict(data)
            if "api_version" not in data:
                data.setdefault("apiVersion", cls.API_VERSION)
            data.setdefault("kind", cls.KIND)
        return data

    @field_validator("api_version")
    @classmethod
    def _check_api_version(cls, value: str) -> str:
        if cls.API_VERSION and value != cls.API_VERSION:
            raise ValueError(f"must be {cls.API_VERSION!r} for {cls.KIND}")
        return value

    @field_validator("kind")
    @classmethod
    def _check_kind(cls, value: str) -> str:
        if cls.KIND and value != cls.KIND:
            raise ValueError(f"must be {cls.KIND!r}")
        return value

    @property
    def name(self) -> str:
        return self.metadata.name or ""

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or ""
