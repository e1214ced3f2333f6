"""``caraway worker --uid/--gid``: run as another user, as Celery's worker does.

Only root can switch users, so a worker started by anyone else refuses a ``--uid`` or
``--gid`` that is not already its own rather than run with privileges it was told to drop.
"""

from __future__ import annotations

import grp
import os
import pwd

import click


def drop_privileges(uid: str | None, gid: str | None) -> None:
    """Become ``uid`` (name or number) and ``gid`` (default: that user's group) for good."""
    if uid is None and gid is None:
        return
    user = _user(uid) if uid is not None else None
    target_uid = user.pw_uid if user is not None else os.getuid()
    target_gid = _group(gid) if gid is not None else (user.pw_gid if user else os.getgid())
    if (target_uid, target_gid) == (os.getuid(), os.getgid()):
        return  # already that user: nothing to drop
    if os.geteuid() != 0:
        raise click.UsageError(
            f"--uid/--gid need a worker started as root to switch users; this one runs as "
            f"uid {os.getuid()}. Start it as root (it switches before taking any task), or "
            "start it as the user you want and drop --uid/--gid."
        )
    if user is not None:
        os.initgroups(user.pw_name, target_gid)
    else:
        os.setgroups([target_gid])
    os.setgid(target_gid)
    os.setuid(target_uid)
    if target_uid != 0 and _can_become_root():
        raise click.ClickException("could not drop root privileges: setuid(0) still works")


def _user(value: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwuid(int(value)) if value.isdigit() else pwd.getpwnam(value)
    except KeyError:
        raise click.BadParameter(f"no user {value!r} on this system", param_hint="--uid") from None


def _group(value: str) -> int:
    try:
        return int(value) if value.isdigit() else grp.getgrnam(value).gr_gid
    except KeyError:
        raise click.BadParameter(f"no group {value!r} on this system", param_hint="--gid") from None


def _can_become_root() -> bool:
    try:
        os.setuid(0)
    except PermissionError:
        return False
    return True
