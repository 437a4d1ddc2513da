"""What work exists: the app and its stages, pipelines, the task envelope, the Avro
schema registry and Conductor-style workflow definitions."""
