"""Conductor workflows: reading and compiling definitions, and what their stages do.

:mod:`~streamtask.conductor.definitions` reads a definition and walks its tasks,
:mod:`~streamtask.conductor.compiler` turns them into stage declarations
(:mod:`~streamtask.conductor.stages`), and :mod:`streamtask.model.workflow` declares them on a
``WorkflowApp``. The other modules are what those stages do when tasks arrive: expressions,
task definitions, run contexts, system tasks, waits, timers, loops, sub-workflows, sinks.
"""
