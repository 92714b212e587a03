"""The webhook's database: its sessions, and the three things kept in it (the event queue, the
incidents with their attempts, and the history), built once and passed around as one."""

from __future__ import annotations

from sqlalchemy import Engine

from .event_queue import EventQueue
from .history import History
from .incidents import Incidents
from .sessions import Sessions


class WebhookDatabase(Sessions):
    """One webhook process's access to its database (thread-safe: a session per call)."""

    def __init__(self, engine: Engine):
        super().__init__(engine)
        self.incidents = Incidents(self)
        self.queue = EventQueue(self, self.incidents)
        self.history = History(self)
