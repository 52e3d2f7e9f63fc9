"""Guard agents: validate compacted input topics and dead-letter what no view can use."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from streams.core import telemetry
from streams.core.dlq import ErrorClass
from streams.core.messages import Consumed
from streams.core.models import Record
from streams.core.serde import AvroSerde, SerdeError
from streams.core.settings import Settings
from streams.processors.effects import dead_letter


class RecordGuard:
    """Decodes every record of one topic (in a consumer group) and dead-letters the undecodable.

    The global views skip such records; the guard makes sure each is dead-lettered once, with
    the reason, instead of being silently ignored.
    """

    def __init__(
        self, settings: Settings, serde: AvroSerde, emit: Any, base: str, model: type[Record]
    ) -> None:
        self.serde = serde
        self.emit = emit
        self.model = model
        self.topic = settings.topic(base)
        self.stage = f"guard.{base}"
        self.log = telemetry.get_logger(self.stage)

    async def check(self, record: Consumed) -> bool:
        """True if the record is usable (or a tombstone); else it is dead-lettered with the reason."""
        if record.value is None:
            return True  # a tombstone deletes the key: valid on a compacted topic
        try:
            self.serde.decode(record.value, self.model)
            return True
        except SerdeError as exc:
            error = ErrorClass(exc.error_class)
            await dead_letter(self.emit, self.stage, record, error, str(exc), datetime.now(UTC), self.log)
            return False
