"""The README's "Testing your stages" example runs as printed."""

from __future__ import annotations

import re
from types import ModuleType

from tests.helpers import REPO_ROOT


def test_the_readme_testing_example_passes() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    [source] = [block for block in re.findall(r"```python\n(.*?)```", readme, re.S)
                if block.startswith("# test_photos.py")]
    module = ModuleType("test_photos")
    exec(compile(source, "README.md:test_photos.py", "exec"), module.__dict__)
    module.test_photos()
