"""streamtask: a Kafka-native task processor for Python.

Declare stages on an :class:`App`, send tasks with :meth:`App.send` or a
:class:`TaskProducer`, and run them with ``streamtask worker module:app``.
"""

from streamtask.config import KafkaSettings, WorkerSettings
from streamtask.errors import (
    BrokerUnavailable,
    ConfigurationError,
    DecodeError,
    DeliveryFailed,
    PayloadSchemaError,
    ProduceRejected,
    StreamtaskError,
    UnknownTaskType,
)
from streamtask.kafka.producer import TaskProducer
from streamtask.model.app import App, Stage
from streamtask.model.envelope import Task
from streamtask.worker import TaskTimeout, Worker

__all__ = [
    "App",
    "BrokerUnavailable",
    "ConfigurationError",
    "DecodeError",
    "DeliveryFailed",
    "KafkaSettings",
    "PayloadSchemaError",
    "ProduceRejected",
    "Stage",
    "StreamtaskError",
    "Task",
    "TaskProducer",
    "TaskTimeout",
    "UnknownTaskType",
    "Worker",
    "WorkerSettings",
]
__version__ = "0.1.0"
