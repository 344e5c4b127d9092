"""A task module whose import fails (test_python_tasks.py)."""

import jobd


@jobd.task
def never():
    return 1


def _helper():
    raise RuntimeError("this module is broken on purpose")


_helper()
