"""Operator tools: dead-letter reading and replay, pipeline checks, the graph, status,
metrics, the execution trail and tracing."""
