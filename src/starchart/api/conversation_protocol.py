"""Wire models of the conversation API (/v1/conversations...).

Kept beside ``protocol.py`` (and reusing its ``SamplingFields``) rather than in
it, so the conversation store can be merged without touching that module.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr

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
    """A user turn: its text plus any sampling field of /v1/chat/completions."""

    content: StrictStr = Field(min_length=1)
    stream: bool = True


ExportFormat = Literal["json", "markdown"]
