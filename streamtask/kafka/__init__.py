"""Kafka plumbing: the typed client factories and the transport through which the
runtime opens every client (:mod:`.clients`), topics, the task producer, the
retry and dead-letter headers, and the ACLs each role needs."""
