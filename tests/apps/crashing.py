"""An app whose validation fails with an unexpected error, standing in for a bug."""

from __future__ import annotations

from streamtask import App, KafkaSettings


class CrashingApp(App):
    def validate(self) -> None:
        raise RuntimeError("an unexpected failure inside streamtask")


app = CrashingApp("crashing", kafka=KafkaSettings("127.0.0.1:9"))
app.stage("work")(lambda task: None)
