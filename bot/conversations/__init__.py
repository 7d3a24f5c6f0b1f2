"""Conversations: a tree of turns bound to a Discord thread, replayed as Gemini history.

A conversation starts with a result and is bound to the thread opened on it (ids are plain
ints; nothing here imports Discord). Each *turn* is one exchange — the user content sent and
the model content received — plus the image delivered for it (``image_sha256``) and the
Discord message showing it (``message_id``). ``parent_id`` makes the tree: a message in the
thread continues from the latest turn, a reply to an earlier picture continues from that one,
and both are just "add a turn under parent P".

- parts.py    the stored form of parts (images as sha256 refs) and what of a model turn is kept
- records.py  Conversation, Turn, History and how their rows read
- store.py    :class:`Conversations`: creating, binding, adding turns, finding them, pruning
- replay.py   a turn's path back as Gemini ``contents`` within a byte budget
"""

from bot.image_store import ImagePruned

from .records import Conversation, History, Turn
from .replay import BLOB_BYTES
from .store import Conversations

__all__ = ["BLOB_BYTES", "Conversation", "Conversations", "History", "ImagePruned", "Turn"]
