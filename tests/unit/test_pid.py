"""``current_pid``: the process id without a system call, right after a fork too."""

from __future__ import annotations

import os

from caraway.utils.pid import current_pid


def test_current_pid_is_the_process_id_in_the_parent_and_in_a_forked_child() -> None:
    assert current_pid() == os.getpid()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        os.write(write, b"%d %d" % (current_pid(), os.getpid()))
        os._exit(0)
    os.close(write)
    seen, actual = map(int, os.read(read, 64).split())
    os.close(read)
    os.waitpid(child, 0)
    assert seen == actual == child
    assert current_pid() == os.getpid() != child
