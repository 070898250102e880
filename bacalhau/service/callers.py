"""Who is calling, and what each caller may do with a job.

A call's caller is the user key that signed it (`bacalhau.callsign`); the api layer checks
the signature and hands the services a `Caller`. The rules, in one place:
- a job's owner is the key that submitted it;
- only the owner, or a key in `serve --admin-keys`, cancels a job or sees its env values;
- `serve --allow-clients` (when given) names the keys that may submit jobs and upload data;
- job listings show the caller's own jobs unless asked for every user's;
- results and logs are readable by anyone who has the job ID or CID (content addressing is
  the capability), and the spec's env values are never shown to anyone but the owner and admins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bacalhau.errors import BacalhauError

HIDDEN = "<hidden>"  # an env value shown to someone who may not see it


class Forbidden(BacalhauError):
    """The caller is known, but may not do this."""


@dataclass(frozen=True)
class Caller:
    user_id: str
    admin: bool = False

    def owns(self, job: Any) -> bool:
        return self.admin or (bool(self.user_id) and job.client_id == self.user_id)


@dataclass(frozen=True)
class Access:
    """The node's policy: its admin keys, and who may submit (None: anyone)."""

    admins: frozenset[str] = frozenset()
    submitters: frozenset[str] | None = None

    def caller(self, user_id: str) -> Caller:
        return Caller(user_id, admin=user_id in self.admins)

    def check_submit(self, caller: Caller, what: str = "submit jobs") -> None:
        if self.submitters is None or caller.admin or caller.user_id in self.submitters:
            return
        raise Forbidden(
            f"user {caller.user_id} may not {what} on this node",
            hint="ask its operator to add your user ID to its --allow-clients file",
        )


def check_owner(caller: Caller, job: Any, what: str) -> None:
    if not caller.owns(job):
        raise Forbidden(
            f"job {job.id} belongs to user {job.client_id or '(unknown)'}; only its owner or an "
            f"admin may {what} it",
            hint="sign with the key that submitted it",
        )


def view(job: Any, caller: Caller) -> Any:
    """`job` as `caller` may see it: env values hidden unless the caller owns it."""
    if caller.owns(job):
        return job
    shown = type(job)()
    shown.CopyFrom(job)
    spec = shown.spec
    for field, section in spec.ListFields():
        if field.message_type is None or "env" not in field.message_type.fields_by_name:
            continue
        env = section.env
        for key in list(env):
            env[key] = HIDDEN
    return shown
