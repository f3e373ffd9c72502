"""Wire models of the conversation API (/v1/conversations...).

Kept beside ``protocol.py`` (and reusing its ``SamplingFields``) rather than in
it, so the conversation store can be merged without touching that module.
"""

from __future__ import annotations

from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    ValidationInfo,
    field_validator,
)

from starchart.api.protocol import SamplingFields

TITLE_MAX = 500


class ConversationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: StrictStr | None = Field(None, max_length=TITLE_MAX)
    system_prompt: StrictStr | None = None
    model: StrictStr | None = None


class ConversationUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: StrictStr | None = Field(None, max_length=TITLE_MAX)
    system_prompt: StrictStr | None = None


class MessageCreate(SamplingFields):
    """A user turn: its text plus any sampling field of /v1/chat/completions.

    ``regenerate: true`` instead of ``content`` answers the last user turn
    again, replacing the answer it had.
    """

    # Before ``content``: its validator reads it.
    regenerate: bool = False
    content: StrictStr | None = Field(None, min_length=1, validate_default=True)
    stream: bool = True

    @field_validator("content")
    @classmethod
    def _content_or_regenerate(cls, value: str | None, info: ValidationInfo) -> str | None:
        regenerate = info.data.get("regenerate", False)
        if regenerate and value is not None:
            raise ValueError("give either content or regenerate: true, not both")
        if not regenerate and value is None:
            raise ValueError("content is required (or regenerate: true to answer the last"
                             " user turn again)")
        return value


ExportFormat = Literal["json", "markdown"]
