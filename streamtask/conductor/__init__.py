"""Conductor workflows at run time: expressions, task definitions, run contexts, system tasks.

:mod:`streamtask.model.workflow` compiles a definition into stages; the modules here are what
those stages do when tasks arrive.
"""
