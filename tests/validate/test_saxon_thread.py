"""Saxon objects live and die on the saxon thread, whichever thread uses or frees a Rules.

saxonche is a GraalVM native image: a saxon object freed on a thread other than the
one that made it can end the whole process with exit status 99 (GraalVM's "Fatal
error: StackOverflowError", on file descriptor 2, which pytest's capture hides). The
cyclic garbage collector frees objects on whichever thread it runs, so before
bridge.cda.saxon the suite died or passed by the order of its tests (issue 15 item 5).
Each case runs in a process of its own: a regression kills that process, not the run.
"""

import subprocess
import sys
import textwrap

import pytest

from .validate_support import REFERENCE, SAMPLES

#: Validate on one thread, then free the Rules (and collect) on another: the two orders of
#: the threads' stacks, the main thread's and a pool thread's.
CASES = {
    "used on the main thread, freed on another": """
        rules = load_rules(REFERENCE)
        assert validate_cda(SAMPLE.read_bytes(), rules).ok
        on_thread(lambda: box.append(rules))
        del rules
        on_thread(lambda: (box.clear(), gc.collect()))
    """,
    "used on another thread, freed on the main thread": """
        on_thread(lambda: box.append(load_rules(REFERENCE)))
        on_thread(lambda: box.append(validate_cda(SAMPLE.read_bytes(), box[0]).ok))
        assert box[1]
        box.clear()
        gc.collect()
    """,
    "in a reference cycle, collected on another thread": """
        rules = load_rules(REFERENCE)
        rules.cycle = rules
        assert validate_cda(SAMPLE.read_bytes(), rules).ok
        del rules
        on_thread(gc.collect)
    """,
}

PRELUDE = """
    import gc, threading
    from pathlib import Path
    from bridge.cda.validate import load_rules, validate_cda

    REFERENCE = Path({reference!r})
    SAMPLE = Path({sample!r})
    box = []

    def on_thread(fn):
        thread = threading.Thread(target=fn)
        thread.start()
        thread.join()
"""


@pytest.mark.parametrize("case", sorted(CASES))
def test_rules_freed_on_any_thread_leave_the_process_running(case):
    script = textwrap.dedent(PRELUDE).format(reference=str(REFERENCE.resolve()),
                                             sample=str(SAMPLES / "LAB.xml"))
    script += textwrap.dedent(CASES[case]) + "print('still running')\n"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert (done.returncode, done.stdout.strip()) == (0, "still running"), done.stderr[:1500]
    assert "Fatal error" not in done.stderr
