"""Base classes shared by every contract model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Contract(BaseModel):
    """A message a publisher sends: strict, so a typo is an error that names the field."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def to_body(self) -> bytes:
        """Serialise to the UTF-8 JSON body that goes on the wire."""
        return self.model_dump_json(exclude_none=True).encode()


class OpenContract(BaseModel):
    """A message the worker sends: subscribers keep working when fields are added."""

    model_config = ConfigDict(extra="allow", frozen=True)

    def to_body(self) -> bytes:
        return self.model_dump_json().encode()
