"""What the ITSM sinks that look a record up before writing share."""

from __future__ import annotations

from datetime import UTC, datetime

from connectors.sinks.http import HttpCaller, SinkError, with_lookup_retries
from streams.core.dlq import ErrorClass
from streams.core.models import ChangeCommand, IncidentCommand, RecordType, SinkOutcome, SinkResult


class LookupSink:
    """Per command: attempts counted from zero, the lookup-retry loop, one SinkResult shape.

    Subclasses set `name` and `caller`, and implement `_incident` and `_change`.
    """

    name: str
    caller: HttpCaller

    def handle_incident(self, cmd: IncidentCommand) -> SinkResult:
        """Deliver one incident command; raises SinkError when it cannot be delivered."""
        self.caller.reset()
        return with_lookup_retries(self.caller.policy, lambda: self._incident(cmd), self.caller.deadline)

    def handle_change(self, cmd: ChangeCommand) -> SinkResult:
        """Deliver one change command; raises SinkError when it cannot be delivered."""
        self.caller.reset()
        return with_lookup_retries(self.caller.policy, lambda: self._change(cmd), self.caller.deadline)

    def missing_ref(self, cmd: ChangeCommand) -> SinkError:
        """A command addressing a change by the ITSM's own id that the ITSM does not have."""
        return SinkError(
            f"{self.name} has no change {cmd.itsm_ref} (named by command {cmd.command_id})",
            ErrorClass.VALIDATION,
            self.caller.attempts,
            False,
        )

    def _incident(self, cmd: IncidentCommand) -> SinkResult:
        raise NotImplementedError

    def _change(self, cmd: ChangeCommand) -> SinkResult:
        raise NotImplementedError

    def result(
        self,
        cmd: IncidentCommand | ChangeCommand,
        kind: RecordType,
        outcome: SinkOutcome,
        itsm_id: str | None,
        itsm_number: str | None,
        message: str,
    ) -> SinkResult:
        return SinkResult(
            command_id=cmd.command_id,
            correlation_id=cmd.correlation_id,
            target=self.name,
            record_type=kind,
            outcome=outcome,
            itsm_id=itsm_id,
            itsm_number=itsm_number,
            attempts=self.caller.attempts,
            message=message,
            completed_at=datetime.now(UTC),
        )
