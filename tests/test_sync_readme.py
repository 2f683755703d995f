"""The README's sync sections run as written, against a collector."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sync_support import ROOT, collector, message_ids

README = (ROOT / "README.md").read_text()
SECTION = README[README.index("## From sync code") : README.index("## Testing your code")]
BLOCKS = re.findall(r"```python\n(.*?)```", SECTION, re.S)


def test_the_sync_snippet_delivers_to_a_local_collector(tmp_path: Path) -> None:
    snippet = BLOCKS[0]
    assert "KoalaSyncClient(" in snippet
    with collector(tmp_path) as (base_url, received):
        env = {"KOALA_BASE_URL": base_url, "KOALA_PUBLIC_API_KEY": "pk_test", "PATH": ""}
        done = subprocess.run(
            [sys.executable, "-c", snippet], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert message_ids(received).total() == 1


@pytest.mark.parametrize("framework", ["django", "flask", "celery"])
def test_each_framework_section_imports_and_builds(framework: str) -> None:
    pytest.importorskip(framework)
    blocks = [b for b in BLOCKS if f"koala_async.{framework}" in b and "import" in b]
    assert blocks, f"no {framework} example in the README"
    prelude = ""
    if framework == "django":
        prelude = textwrap.dedent(
            """
            import django
            from django.conf import settings
            settings.configure(KOALA={"enabled": False})
            django.setup()
            """
        )
    code = prelude + "\n".join(blocks)
    env = {**os.environ, "KOALA_PUBLIC_API_KEY": "pk_test"}  # no call is made: nothing is sent
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
