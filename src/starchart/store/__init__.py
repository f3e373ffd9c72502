"""Conversations and API keys, kept durably (SQLAlchemy; SQLite by default)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

# Imported in open() at run time: every CLI command imports this package (for
# store.commands), and only the ones that open the store should load SQLAlchemy.
if TYPE_CHECKING:
    from starchart.settings import Settings
    from starchart.store.conversations import ConversationStore
    from starchart.store.db import Database
    from starchart.store.keys import KeyStore


@dataclass
class Store:
    db: Database
    conversations: ConversationStore
    keys: KeyStore

    @classmethod
    def open(cls, settings: Settings) -> Store:
        from starchart.store.conversations import ConversationStore
        from starchart.store.db import Database
        from starchart.store.keys import KeyStore

        db = Database.open(settings)
        return cls(db, ConversationStore(db), KeyStore(db))

    def close(self) -> None:
        self.db.close()


__all__ = ["Store"]
