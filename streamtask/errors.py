"""streamtask's exception hierarchy.

Every error a user can meet derives from :class:`StreamtaskError`, so one ``except`` clause
covers the library. Errors raised by confluent-kafka are mapped into this hierarchy at the
one place that talks to it (:mod:`streamtask.kafka`), in the spirit of httpx's exceptions.
"""

from __future__ import annotations


class StreamtaskError(Exception):
    """Base class of every error streamtask raises."""


class ConfigurationError(StreamtaskError):
    """A definition or setting is invalid; the message says how to fix it."""


class DecodeError(StreamtaskError):
    """Bytes could not be decoded into a task.

    Raised for garbage, truncated records, an unknown schema fingerprint, or a payload that
    does not resolve against the reader's schema. It is the only exception the codec raises
    on bad input, so a worker can route any such record to the dead-letter queue.
    """


class UnknownTaskType(DecodeError):
    """The record decoded, but no stage on this topic handles its task type."""


class PayloadSchemaError(StreamtaskError):
    """A payload does not match the schema declared for its task type (raised at send)."""


class KafkaError(StreamtaskError):
    """The Kafka client reported an error."""


class BrokerUnavailable(KafkaError):
    """No broker answered within the allowed time."""


class AuthenticationFailed(KafkaError):
    """The cluster refused the client's credentials (wrong user name, password or mechanism)."""


class AuthorizationFailed(KafkaError):
    """The cluster's ACLs do not allow an operation; the message names the ACL to ask for."""


class DeliveryFailed(KafkaError):
    """The broker did not acknowledge a produced record; the task was not durably sent."""


class ProduceRejected(KafkaError):
    """librdkafka refused a record when it was handed over (``produce`` raised at once).

    ``about_record`` is true when the record itself is at fault (too large, a partition that
    does not exist): another record may well go through, so a worker dead-letters the task
    instead of stopping. Otherwise the producer itself is unusable.
    """

    def __init__(self, message: str, code: str, about_record: bool) -> None:
        super().__init__(message)
        self.code = code
        self.about_record = about_record


class BrokerSetupError(StreamtaskError):
    """The local development broker could not be installed, started or stopped."""


class RoutingError(StreamtaskError):
    """A result has nowhere to go (e.g. a switch value with no case and no default)."""
